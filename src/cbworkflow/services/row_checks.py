"""Shortcuts for the values most rows of a contacts file hold, so a million-row file is not a million runs of
the email validator and the phone parser. Each gives exactly what the full check gives, or None to ask it.

- An email that is plainly well-formed (an ASCII dot-atom before the `@`, host names after it): the validator's
  answer depends on the local part only through its form, so only the domain is checked, once per distinct domain
  (a voter file has a few thousand at most), with the validator itself.
- A phone written in E.164 with country code 1 and a 10-digit number whose area code starts with 2-9
  (`+15551234567`): `to_e164` gives it back unchanged whatever the region. Any other phone is parsed as before,
  remembered for the next row that repeats it (a household's landline).
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import EmailStr, TypeAdapter, ValidationError

from .contacts import to_e164

_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?")
_NANP = re.compile(r"\+1[2-9][0-9]{9}")
_EMAIL = TypeAdapter(EmailStr)


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The domain as the email validator writes it (lower case), or None when it refuses the domain."""
    try:
        return _EMAIL.validate_python("a@" + domain).split("@", 1)[1]
    except ValidationError:
        return None


def plain_email(value: str) -> str | None:
    """`value` as `EmailStr` returns it, for a plainly well-formed ASCII address; None: ask `EmailStr`."""
    if len(value) > 200:  # far inside the validator's 254, so length is never what it would refuse
        return None
    local, at, domain = value.rpartition("@")
    if not at or len(local) > 64 or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    normal = _domain(domain)
    return None if normal is None else f"{local}@{normal}"


@lru_cache(maxsize=4096)
def _parsed_e164(phone: str, region: str) -> str | None:
    return to_e164(phone, region)


def e164(phone: str, region: str) -> str | None:
    """`to_e164(phone, region)`: without parsing for a plain North American E.164 number."""
    if _NANP.fullmatch(phone):
        return phone
    return _parsed_e164(phone, region)
