"""Errors of the text analysis: all are bad input (422)."""

from __future__ import annotations

from src.exceptions import AppError


class MorphologyError(AppError):
    status_code = 422


class EmptyText(MorphologyError):
    """The text is empty or only whitespace."""

    def __init__(self) -> None:
        super().__init__("text is empty")


class TextTooLong(MorphologyError):
    """The text is longer than `MORPHOLOGY_MAX_TEXT_CHARS`."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"text is {length} characters long; the limit is {limit} characters "
            "(MORPHOLOGY_MAX_TEXT_CHARS)",
            length=length,
            limit=limit,
        )


class NoCyrillicText(MorphologyError):
    """Russian text was required and the text has no Cyrillic letter."""

    def __init__(self) -> None:
        super().__init__("text has no Cyrillic letters; Russian text is required")
