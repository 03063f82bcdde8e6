"""Where each record of the JSON-file store lives (the tree is drawn in the package's docstring).

An id that cannot be a file name names no file (None): such a record cannot exist, so looking it up finds
nothing and storing it is refused. Keys that are free text (external ids, idempotency keys) are hashed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...ids import SLUG_RE
from ...models.instances import MOVABLE, TERMINAL

FORMAT = 2  # 2: campaign-number counts kept in <tenant>/tallies/
STORED = "_stored"  # a per-record stamp of when it was first stored: breaks ties in lists, orders search results
TIMELINE = "timeline"
MOVABLE_STATUSES = frozenset(status.value for status in MOVABLE)
FINISHED_STATUSES = frozenset(status.value for status in TERMINAL)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DUE_ENTRY = re.compile(r"(\d{17})\.([a-z0-9][a-z0-9_-]{0,63})\.(.+)\.json")  # <wake, µs>.<tenant>.<instance id>


def file_name(value: str) -> str | None:
    """`value` as a file name, or None when it cannot be one (such a record cannot exist)."""
    return value if _SAFE_NAME.match(value) and ".." not in value else None


def hashed(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


class Layout:
    """The paths of one store, under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "store.json"
        self.journal = root / ".journal"
        self.due_dir = root / ".due"

    # ------------------------------------------------------------------ tenants
    def home(self, tenant: str) -> Path:
        return self.root / tenant

    def tenant_file(self, tenant_id: str) -> Path | None:
        name = file_name(tenant_id)
        return None if name is None or not SLUG_RE.match(name) else self.root / name / "tenant.json"

    def tenant_dirs(self) -> Iterator[Path]:
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and SLUG_RE.match(entry.name):
                        yield self.root / entry.name
        except FileNotFoundError:
            return

    # ------------------------------------------------------------------ records of a tenant
    def record(self, tenant: str, folder: str, record_id: str) -> Path | None:
        """`<tenant>/<folder>/<id>.json`: contacts, instances, templates, snapshots, tokens, contact-instances, jobs,
        users, sessions."""
        name = file_name(record_id)
        return None if name is None else self.root / tenant / folder / f"{name}.json"

    def external_id(self, tenant: str, external_id: str) -> Path:
        return self.root / tenant / "external-ids" / f"{hashed(external_id)}.json"

    def idempotency(self, tenant: str, route: str, key: str) -> Path:
        return self.root / tenant / "idempotency" / f"{hashed(route, key)}.json"

    def versions_dir(self, tenant: str, template_id: str) -> Path | None:
        name = file_name(template_id)
        return None if name is None else self.root / tenant / "template-versions" / name

    def version(self, tenant: str, template_id: str, version: str) -> Path | None:
        folder = self.versions_dir(tenant, template_id)
        name = file_name(version)
        return None if folder is None or name is None else folder / f"{name}.json"

    def job_rows(self, tenant: str, job_id: str, seq: int | None = None) -> Path | None:
        """`<tenant>/job-rows/<job id>/<seq>.json`: a chunk a job staged (the folder when `seq` is None)."""
        name = file_name(job_id)
        if name is None:
            return None
        folder = self.root / tenant / "job-rows" / name
        return folder if seq is None else folder / f"{seq:09d}.json"

    # ------------------------------------------------------------------ across tenants
    def token_link(self, secret_hash: str) -> Path | None:
        """`.tokens/<hash>.json`: which tenant's token has this secret."""
        name = file_name(secret_hash)
        return None if name is None else self.root / ".tokens" / f"{name}.json"

    def user_emails(self, email_key: str) -> Path:
        """`.user-emails/<sha256 of the email key>/`: a link per tenant that has a person signing in with it."""
        return self.root / ".user-emails" / hashed(email_key)

    def user_email(self, email_key: str, tenant: str) -> Path:
        """`.user-emails/<sha256 of the email key>/<tenant>.json`: which person of `tenant` has the address."""
        return self.user_emails(email_key) / f"{tenant}.json"

    def due_entry(self, doc: dict[str, Any] | None) -> Path | None:
        """The `.due/` entry of an instance whose work can come due. It is named by the wake time, so listing that
        folder gives the due work in order without reading every instance."""
        if doc is None or doc["status"] not in MOVABLE_STATUSES or not doc.get("wake_at"):
            return None
        wake_us = max(0, int(parse_time(doc["wake_at"]).timestamp() * 1_000_000))
        return self.due_dir / f"{wake_us:017d}.{doc['tenant']}.{doc['id']}.json"

    def due(self) -> list[tuple[datetime, str, str, Path]]:
        """Every `.due/` entry as (wake time, tenant, instance id, entry), earliest first; stray files are ignored."""
        try:
            names = sorted(os.listdir(self.due_dir))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _DUE_ENTRY.fullmatch(name)
            if match is None or file_name(match[3]) is None:
                continue
            wake = datetime.fromtimestamp(int(match[1]) / 1_000_000, UTC)
            found.append((wake, match[2], match[3], self.due_dir / name))
        return found
