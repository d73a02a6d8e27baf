"""Text analysis fixtures: settings from arguments (not the environment), one analyzer."""

from __future__ import annotations

from typing import Any

import pytest

from src.morphology.analyzer import MorphAnalyzer, create_analyzer
from src.morphology.config import MorphologySettings


def make_settings(**overrides: Any) -> MorphologySettings:
    """Settings with the defaults, ignoring `.env`, and `overrides` validated."""
    return MorphologySettings(_env_file=None, **overrides)


@pytest.fixture(scope="session")
def analyzer() -> MorphAnalyzer:
    return create_analyzer(make_settings())
