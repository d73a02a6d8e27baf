"""The morphology benchmark (bench/morphology.py) runs end to end with tiny numbers."""

from __future__ import annotations

import pytest

from bench.morphology import CommentGenerator, main
from src.morphology.tokenizer import tokenize


def test_corpus_is_deterministic_and_comment_like() -> None:
    first = CommentGenerator(3).comments(300)
    assert first == CommentGenerator(3).comments(300)
    assert first != CommentGenerator(4).comments(300)
    tokenized = [tokenize(text) for text in first]
    assert sum(len(t.words) for t in tokenized) > 3000
    assert sum(len(t.mentions) for t in tokenized) > 10
    assert sum(len(t.links) for t in tokenized) > 3


def test_bench_prints_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--comments", "100", "--keyword-comments", "200", "--repeat", "1"]) == 0
    output = capsys.readouterr().out
    rows = {
        cells[0]: cells[1:]
        for line in output.splitlines()
        if len(cells := [cell.strip() for cell in line.split("|")]) == 5
    }
    for case in (
        "pymorphy3 parse() per word",
        "analyze_text, cold cache",
        "analyze_text, warm cache",
        "analyze_text + counts",
        "tokenize only",
        "analyze_text x 200 comments",
        "keywords of 200 comments",
        "background of 200 comments",
        "keywords of 20 vs background",
    ):
        assert case in rows, case
        assert rows[case][2].endswith("/s")
    assert "keywords of the 200:" in output
