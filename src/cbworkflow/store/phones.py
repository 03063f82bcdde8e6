"""How phone numbers are searched: by their digits, in E.164 form when the number parsed."""

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
