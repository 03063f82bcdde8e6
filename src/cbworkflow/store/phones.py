"""How contacts are searched: phones by their digits (in E.164 form when the number parsed), names by their
case-folded start."""

from __future__ import annotations


def phone_digits(phone: str | None, phone_e164: str | None) -> str | None:
    """The digits a contact's phone is found by: E.164 when it parsed (so "+1 555…" and "555…" both match), else
    what was given."""
    return "".join(ch for ch in phone_e164 or phone or "" if ch.isdigit()) or None


def phone_query_digits(query: str) -> str | None:
    """The digits to look for in phones, when the query looks like (part of) a phone number.

    A national trunk prefix ("020 7946…" in the UK) is dropped, since stored digits are in E.164 form.
    """
    text = query.strip()
    if not text or not all(ch.isdigit() or ch in " +-()./x" for ch in text):
        return None
    digits = "".join(ch for ch in text if ch.isdigit())
    if not text.startswith("+"):
        digits = digits.lstrip("0")
    return digits if len(digits) >= 3 else None


NAME_KEY_CHARS = 200  # the stored key's length: the name column's


def name_key(name: str) -> str:
    """What a short query matches the start of, and what its results are sorted by: the name case-folded
    ("Ärzte" and "ärzte" alike), cut to the column's length."""
    return name.strip().casefold()[:NAME_KEY_CHARS]


def next_prefix(prefix: str) -> str | None:
    """The first key after every key that starts with `prefix`, in code-point order (None when `prefix` is all
    U+10FFFF: then every key from it on starts with it):
    `name_key >= prefix AND name_key < next_prefix(prefix)` is a prefix match an index can serve."""
    for cut in range(len(prefix), 0, -1):
        point = ord(prefix[cut - 1]) + 1
        if point == 0xD800:  # surrogates cannot be stored: skip them
            point = 0xE000
        if point <= 0x10FFFF:
            return prefix[: cut - 1] + chr(point)
    return None
