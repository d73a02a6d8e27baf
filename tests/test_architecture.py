"""The architecture holds: the import contracts of `architecture.ini`, and files of one job each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450


def test_the_import_contracts_hold() -> None:
    """Packages depend downwards only, the job module names no domain, and each package's
    tables are touched by that package only (see architecture.ini)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "architecture.ini", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


def test_a_broken_contract_is_caught(tmp_path: Path) -> None:
    """The check can fail: a domain importing the job history's table is reported."""
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = src\n\n"
        "[importlinter:contract:c]\nname = nobody imports the job module\ntype = forbidden\n"
        "source_modules =\n    src.comments\nforbidden_modules =\n    src.arq\n"
    )
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_no_source_file_does_many_jobs() -> None:
    """A file over MAX_LINES lines is several files' worth: split it by concern."""
    long = {
        str(path.relative_to(ROOT)): count
        for path in sorted((ROOT / "src").rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
