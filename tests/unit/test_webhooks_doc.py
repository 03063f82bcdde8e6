"""docs/webhooks.md's ways of verifying a delivery, run against what the sender really sends: the by-hand
function from the page itself, and the `standardwebhooks` package as the page calls it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from cbworkflow.runtime.deliveries import signed_headers
from cbworkflow.services.subscriptions import check_secret, new_secret

PAGE = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
BODY = '{"type":"user_note","timestamp":"2026-12-03T15:00:00+00:00","data":{"id":"x","text":"café ✓"}}'


def by_hand() -> Any:
    """The page's `verified` function, as printed there."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    (source,) = [block for block in blocks if "def verified" in block]
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # our own documentation
    return namespace["verified"]


def test_the_pages_function_verifies_a_real_delivery_and_refuses_a_changed_one() -> None:
    verified = by_hand()
    secret = new_secret()
    headers = signed_headers(secret, "msg_abc123", datetime.now(UTC), BODY)
    assert verified(secret, headers, BODY.encode())
    assert not verified(secret, headers, BODY.replace("café", "cafe").encode())
    assert not verified(new_secret(), headers, BODY.encode())
    old = signed_headers(secret, "msg_abc123", datetime.now(UTC) - timedelta(minutes=6), BODY)
    assert not verified(secret, old, BODY.encode())  # too old: a replay


def test_the_package_verifies_a_real_delivery() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_abc123", datetime.now(UTC), BODY)
    assert Webhook(secret).verify(BODY.encode(), headers)["data"]["text"] == "café ✓"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY.encode(), headers)


def test_generated_secrets_are_valid_given_ones() -> None:
    secret = new_secret()
    assert check_secret(secret) == secret
    assert secret.startswith("whsec_")
