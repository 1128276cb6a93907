"""Whole numbers from text people write: only ASCII digits pass, never a ValueError."""

from __future__ import annotations

import pytest

from mmesh.core.numbers import signed_whole_number, whole_number


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), ("007", 7)])
def test_ascii_digits_are_their_value(text: str, value: int) -> None:
    assert whole_number(text) == value


@pytest.mark.parametrize("text", ["", " 1", "1 ", "+1", "-1", "1_000", "1.5", "²", "①", "٣", "x"])
def test_anything_else_is_none(text: str) -> None:
    """ "²" and "①" pass str.isdigit() and make int() raise; "٣" is a digit int() reads."""
    assert whole_number(text) is None


@pytest.mark.parametrize(
    ("text", "value"), [("5", 5), ("-5", -5), ("-0", 0), ("--5", None), ("-²", None), ("-", None)]
)
def test_one_leading_minus_sign_is_allowed_when_signed(text: str, value: int | None) -> None:
    assert signed_whole_number(text) == value
