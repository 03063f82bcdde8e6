"""Contacts import and export (`POST /api/contacts/import`, `GET /api/contacts/export`): what an import answers."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from .common import ResponseModel

REJECTIONS_SHOWN = 5_000  # rejections an answer lists (the counts are always whole): every one of an inline file
ROWS_SHOWN = 1_000  # per-row matches an answer lists


class FileFormat(StrEnum):
    """`csv` (a header row, then one contact per record) or `jsonl` (one JSON object per line)."""

    CSV = "csv"
    JSONL = "jsonl"


# The body types `POST /api/contacts/import` reads (a `charset`, when given, must be UTF-8).
IMPORT_TYPES = {
    "text/csv": FileFormat.CSV,
    "application/x-ndjson": FileFormat.JSONL,
    "application/jsonl": FileFormat.JSONL,
}


def import_format(content_type: str) -> FileFormat | None:
    """The format a `Content-Type` header names, or None when an import cannot read it."""
    kind, _, parameters = content_type.partition(";")
    found = IMPORT_TYPES.get(kind.strip().lower())
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return None
    return found


class Rejection(ResponseModel):
    """A row of the file that was not imported, and why."""

    line: int
    """Where the row starts in the file (the header is line 1; a CSV record that spans lines starts at its first)."""
    reason: str
    """Why it was not imported, in words a person can fix the row by."""


MatchedBy = Literal["id", "external_id", "email", "phone"]
Action = Literal["created", "updated", "unchanged"]


class ImportedRow(ResponseModel):
    """What became of one row that was imported."""

    line: int
    """Where the row starts in the file (the header is line 1)."""
    contact_id: str | None
    """The contact the row created, updated or left unchanged; null for a contact a dry run would create without
    an `id` column (its id is made when it is really created)."""
    matched_by: MatchedBy | None
    """Which of the row's fields found the existing contact: `id`, `external_id`, `email` or `phone` (E.164);
    null when none did and the row created a contact."""
    action: Action
    """`created`, `updated` (some field changed) or `unchanged` (the contact already had every value of the row)."""


class ImportResult(ResponseModel):
    """The answer of an import (or its job's `result`): counts of the whole file, and the first rows in detail."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 2,
                    "updated": 1,
                    "unchanged": 0,
                    "rejected": 1,
                    "dry_run": False,
                    "rejections": [{"line": 4, "reason": "email: value is not a valid email address"}],
                    "rows": [
                        {"line": 2, "contact_id": "ada-lovelace", "matched_by": "external_id", "action": "updated"},
                        {"line": 3, "contact_id": "5f3a9c1e2b7d", "matched_by": None, "action": "created"},
                    ],
                    "rejections_truncated": False,
                    "rows_truncated": False,
                }
            ]
        }
    )

    created: int = 0
    """Rows that created a contact."""
    updated: int = 0
    """Rows that changed an existing contact."""
    unchanged: int = 0
    """Rows whose contact already had every value of the row (importing the same file again gives only these)."""
    rejected: int = 0
    """Rows not imported; `rejections` says why."""
    dry_run: bool = False
    """True when nothing was written: the counts say what the import would do."""
    rejections: list[Rejection] = Field(default_factory=list)
    """Every rejected row with its line and reason, in file order: the first 5,000 (see `rejections_truncated`)."""
    rows: list[ImportedRow] = Field(default_factory=list)
    """What became of each imported row, in file order: the first 1,000 only (see `rows_truncated`); the counts
    cover the whole file."""
    rejections_truncated: bool = False
    """True when there were more rejections than `rejections` lists (the CLI writes every one to a file)."""
    rows_truncated: bool = False
    """True when more rows were imported than `rows` lists."""
