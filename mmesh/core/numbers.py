"""Pure: whole numbers read from text that users and operators write (headers, annotations,
environment variables).

`str.isdigit()` admits characters `int()` refuses ("²", "①"), so a check with it followed by
`int()` turns such input into a ValueError instead of the caller's clear error; and `int()`
alone admits signs, spaces, underscores and other scripts' digits. Only ASCII digits pass here.
"""

from __future__ import annotations


def whole_number(text: str) -> int | None:
    """The value of `text` when it is one or more ASCII digits, else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def signed_whole_number(text: str) -> int | None:
    """`whole_number`, with one leading minus sign allowed."""
    magnitude = whole_number(text.removeprefix("-"))
    if magnitude is None:
        return None
    return -magnitude if text.startswith("-") else magnitude
