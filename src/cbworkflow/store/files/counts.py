"""Campaign numbers in the JSON-file store: each template's counts in small files, changed in the commit of the
steps they count (`store/tallies.py` says what is counted)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InvalidInput
from ..tallies import ALL_TIME, Count, Metric, Tally, day_of, in_window
from .docs import Doc, event
from .layout import TIMELINE, Layout
from .transaction import FileTransaction


def _place(doc: Doc | None) -> tuple[str, str | None] | None:
    return None if doc is None else (doc["status"], doc["current_node"])


class FileCounts:
    """The counting part of a tenant's `FileTx`."""

    txn: FileTransaction
    layout: Layout
    tenant: str
    home: Path

    def _count_move(self, template_id: str, old: Doc | None, new: Doc | None) -> None:
        tally = Tally()
        tally.moved(template_id, _place(old), _place(new))
        self._add_counts(tally)

    def _counts_file(self, template_id: str, hour: int) -> Path:
        """`<tenant>/tallies/<template>/all.json` for all-time counts, `.../<day's first hour>.json` for the
        hours of one day: a step rewrites two small files, however long the campaign has run."""
        path = self.layout.record(self.tenant, "tallies", template_id)
        if path is None:
            raise InvalidInput("template id: not a valid id")
        folder = path.with_suffix("")
        return folder / ("all.json" if hour == ALL_TIME else f"{day_of(hour)}.json")

    def _add_counts(self, tally: Tally) -> None:
        """Add the changes to the templates' counts files, in this commit."""
        by_file: dict[Path, list[tuple[str, int]]] = {}
        for (template_id, metric, node, key, hour), n in tally.take():
            path = self._counts_file(template_id, hour)
            by_file.setdefault(path, []).append((json.dumps([metric, node, key, hour]), n))
        for path, changes in by_file.items():
            counts = dict((self.txn.get(path) or {}).get("counts", {}))
            for key, n in changes:
                counts[key] = counts.get(key, 0) + n
            kept = {key: n for key, n in counts.items() if n}
            self.txn.put(path, {"counts": kept} if kept else None)

    def count_stored(self) -> None:
        """Count what the tenant's instances already hold (a store written before the counts were kept)."""
        for doc in self.txn.scan(self.home / "instances"):
            tally = Tally()
            tally.moved(doc["template_id"], None, (doc["status"], doc["current_node"]))
            tally.events(event(entry) for entry in doc[TIMELINE])
            self._add_counts(tally)

    def workflow_counts(self, template_id: str, hours: tuple[int, int] | None) -> list[Count]:
        if self.layout.record(self.tenant, "tallies", template_id) is None:
            return []
        everything = self._counts_file(template_id, ALL_TIME)
        docs = [self.txn.peek(everything) or {}]
        if hours is not None:  # the day files the window touches
            first_day, last = day_of(max(hours[0], ALL_TIME + 1)), hours[1]
            for path in sorted(everything.parent.glob("[0-9]*.json")):
                if first_day <= int(path.stem) < last:
                    docs.append(self.txn.peek(path) or {})
        summed: dict[tuple[str, str, str], int] = {}
        for doc in docs:
            for packed, n in doc.get("counts", {}).items():
                metric, node, key, hour = json.loads(packed)
                if hours is None:
                    wanted = hour == ALL_TIME
                else:
                    wanted = metric == Metric.PLACED if hour == ALL_TIME else in_window(metric, hour, hours)
                if wanted:
                    summed[(metric, node, key)] = summed.get((metric, node, key), 0) + n
        return [Count(metric, node, key, n) for (metric, node, key), n in summed.items()]
