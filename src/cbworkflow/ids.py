"""Identifiers: generated ids, slugs, and the pattern a path id must match before it reaches the store."""

from __future__ import annotations

import re
import secrets

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SLUG_RE = re.compile(SLUG_PATTERN)
# Ids given by clients (contacts, templates) are slugs; generated ids are 12 lowercase hex chars, which are slugs too.
# Anything else cannot name a record, so lookups answer 404 without touching the store.
ID_RE = SLUG_RE


def new_id() -> str:
    """A fresh id: 12 lowercase hex characters (48 random bits)."""
    return secrets.token_hex(6)
