"""The contacts file's shortcuts give what the full checks give: `plain_email` what `EmailStr` returns (or None,
and then the row goes to `EmailStr`), `e164` what `to_e164` returns, over many generated values."""

from __future__ import annotations

import random
import string

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError

from cbworkflow.services.contacts import to_e164
from cbworkflow.services.row_checks import e164, plain_email

EMAIL = TypeAdapter(EmailStr)
DOMAINS = [
    *("example.org", "Example.ORG", "gmail.com", "sub.example.co.uk", "a-b.co", "a.b", "EXAMPLE.com"),
    *("x.test", "localhost", "foo.local", "a.invalid", "example.onion", "home.arpa", "example", "example.com."),
    *("-a.com", "a-.com", "xn--bcher-kva.de", "ab--cd.com", "1.2.3.4", "b.123", "ex_ample.com", "qq.c0m"),
    *("x." + "a" * 63 + ".com", "x." + "a" * 64 + ".com", "bücher.de", "[127.0.0.1]"),
]
LOCAL_CHARS = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-." + ' "()<>[],;:é\\'


def _full(value: str) -> str | None:
    try:
        return str(EMAIL.validate_python(value))
    except ValidationError:
        return None


def test_plain_email_is_what_the_validator_returns() -> None:
    rnd = random.Random(10)
    taken = 0
    for _ in range(20_000):
        chars = LOCAL_CHARS if rnd.random() < 0.5 else string.ascii_letters + string.digits + "._+-"
        value = "".join(rnd.choice(chars) for _ in range(rnd.randint(1, 70))) + "@" + rnd.choice(DOMAINS)
        if rnd.random() < 0.05:
            value = value.upper()
        fast = plain_email(value)
        if fast is not None:
            taken += 1
            assert fast == _full(value), value
    assert taken > 2_000  # the shortcut is taken often enough to be worth having


@pytest.mark.parametrize(
    "value",
    ["Voter.One+x@Example.ORG", "a@b.co", "a..b@example.org", ".a@example.org", "a@localhost", "a@x.test", "a b@c.org"],
)
def test_plain_email_on_the_usual_suspects(value: str) -> None:
    fast = plain_email(value)
    assert fast is None or fast == _full(value)
    if value.startswith("Voter"):
        assert fast == "Voter.One+x@example.org"  # the local part as written, the domain in lower case


def test_e164_is_what_the_parser_returns() -> None:
    rnd = random.Random(11)
    cases = [f"+1{a}{b}{rnd.randrange(10**8):08d}" for a in range(10) for b in range(10) for _ in range(20)]
    cases += ["+1" + "".join(rnd.choice(string.digits) for _ in range(rnd.randint(8, 12))) for _ in range(2_000)]
    cases += ["555-123-4567", "(555) 123 4567", "+44 20 7946 0958", "+447911123456", "call me", "+1 555 123 4567"]
    for phone in cases:
        for region in ("US", "GB", "DE"):
            assert e164(phone, region) == to_e164(phone, region), (phone, region)
