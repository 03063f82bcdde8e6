"""The JSON-file store's outbox: every event of a tenant numbered, in `<tenant>/outbox/`.

`head.json` holds the tenant's last sequence. A transaction that appends events locks it (so appenders of one
tenant take turns and commit in sequence order) and writes the events, numbered, into segment files of
`SEGMENT` events each, then the head, last: a reader that reads the head first finds every event up to it in the
segments. An event deleted with its instance or contact is blanked in its segment (`{"sequence": n}`), so the
outbox never outlives the timeline. Events stored before the outbox existed have no sequence and are not in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...models.events import Event
from ..filters import EventFilter
from .docs import Doc, event, fields
from .layout import file_name
from .transaction import FileTransaction

SEGMENT = 32  # a commit rewrites the last segment: small enough to stay cheap, large enough to read in few files


class FileOutbox:
    """The outbox part of `FileTx`."""

    txn: FileTransaction
    home: Path
    tenant: str

    def _outbox(self) -> Path:
        return self.home / "outbox"

    def _segment(self, sequence: int) -> Path:
        return self._outbox() / f"{(sequence - 1) // SEGMENT:012d}.json"

    def number_events(self, entries: Sequence[Doc]) -> None:
        """Give `entries` (events as stored) the tenant's next sequences, and copy them into the outbox."""
        head_path = self._outbox() / "head.json"
        head = self.txn.get(head_path) or {"last": 0}
        last = int(head["last"])
        by_segment: dict[Path, list[Doc]] = {}
        for entry in entries:
            last += 1
            entry["sequence"] = last
            by_segment.setdefault(self._segment(last), []).append(entry)
        for path, added in by_segment.items():
            self.txn.put(path, [*(self.txn.get(path) or []), *added])
        self.txn.put_last(head_path, {"last": last})
        self.txn.heads[self.tenant] = last

    def blank_events(self, entries: Sequence[Doc]) -> None:
        """Take deleted events out of the outbox (their segment keeps the number, not the event)."""
        by_segment: dict[Path, set[int]] = {}
        for entry in entries:
            if entry.get("sequence"):
                by_segment.setdefault(self._segment(int(entry["sequence"])), set()).add(int(entry["sequence"]))
        for path, gone in by_segment.items():
            kept = self.txn.get(path) or []
            self.txn.put(path, [{"sequence": e["sequence"]} if e["sequence"] in gone else e for e in kept])

    def last_sequence(self) -> int:
        head = self.txn.peek(self._outbox() / "head.json")
        return int(head["last"]) if head else 0

    def _stored_after(self, after: int, until: int) -> Iterator[Doc]:
        for index in range(after // SEGMENT, (until - 1) // SEGMENT + 1 if until > 0 else 0):
            for entry in self.txn.peek(self._outbox() / f"{index:012d}.json") or []:
                if after < entry["sequence"] <= until and "type" in entry:
                    yield entry

    def events_after(
        self, after: int, limit: int, where: EventFilter | None = None, until: int | None = None
    ) -> list[Event]:
        head = self.last_sequence()  # first: every event up to it is in the segments already
        until = head if until is None else min(until, head)
        holders: dict[str, Any] = {}
        found = []
        for entry in self._stored_after(after, until):
            if where is None or self._matches(entry, where, holders):
                found.append(event(fields(entry)))
                if len(found) >= limit:
                    break
        return found

    def _matches(self, entry: Doc, where: EventFilter, holders: dict[str, Any]) -> bool:
        for key in ("instance_id", "contact_id", "template_id"):
            wanted = getattr(where, key)
            if wanted is not None and entry.get(key) != wanted:
                return False
        if where.types and entry["type"] not in where.types:
            return False
        if where.held_by is not None:
            instance_id = entry.get("instance_id")
            if instance_id is None:
                return False
            if instance_id not in holders:
                name = file_name(instance_id)
                doc = None if name is None else self.txn.peek(self.home / "instances" / f"{name}.json")
                holders[instance_id] = doc.get("held_by") if doc else None
            return bool(holders[instance_id] == where.held_by)
        return True

    def _cursor_path(self, name: str) -> Path:
        safe = file_name(name)
        if safe is None:
            raise ValueError(f"outbox reader {name!r}: not a name")
        return self._outbox() / "cursors" / f"{safe}.json"

    def outbox_cursor(self, name: str) -> int:
        found = self.txn.get(self._cursor_path(name))
        return int(found["sequence"]) if found else 0

    def set_outbox_cursor(self, name: str, sequence: int) -> None:
        self.txn.put(self._cursor_path(name), {"sequence": sequence})
