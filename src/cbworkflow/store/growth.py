"""Planner statistics that follow a bulk load: a table a process grows by many rows is analysed again.

Why: PostgreSQL plans each lookup from the statistics of the last `ANALYZE`. A contacts import into a table
analysed while it was nearly empty had each batch's lookup (by external id, email, phone) planned as a walk over
the tenant's every contact: 440 ms a batch of 500 at 850,000 contacts instead of 4 ms, so a million-row import
slowed as it went. Autovacuum analyses in the background about a minute after a table has grown by a tenth,
and never when it is off; a bulk load grows a table faster than that. So the process counts the rows its bulk
paths (`COPY`) add, and when a table has grown by half since it was last analysed (1,000 rows at least), it
analyses that table in a thread of its own, one table at a time, without holding up the batches. The floor is low
because a table analysed empty has no statistics of its tenants: until the first analysis with rows, a lookup
cannot tell its key's index from a walk over the whole tenant (see `PostgresTx.find_contacts`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

log = logging.getLogger("cbworkflow.store")

FLOOR = 1_000  # rows added before a table is analysed again, at least
SHARE = 0.5  # ... or this share of the rows it had when it was last analysed, when that is more


class Growth:
    """Rows added per table since each was last analysed, and the analyses that follow (one at a time)."""

    def __init__(self, analyse: Callable[[str], int]) -> None:
        """`analyse(table)` analyses the table and returns the number of rows it holds now."""
        self._analyse = analyse
        self._lock = threading.Lock()
        self._added: Counter[str] = Counter()
        self._rows: dict[str, int] = {}
        self._running: threading.Thread | None = None
        self._closed = False

    def add(self, grown: Mapping[str, int]) -> None:
        """Count the rows a committed transaction added; start an analysis when a table is due one."""
        with self._lock:
            self._added.update(grown)
            if self._closed or (self._running is not None and self._running.is_alive()):
                return  # the next commit after it will look again
            due = [table for table, added in self._added.items() if added >= self.threshold(table)]
            if not due:
                return
            for table in due:
                self._added[table] = 0
            self._running = threading.Thread(target=self._run, args=(due,), name="cbw-analyse", daemon=True)
            self._running.start()

    def threshold(self, table: str) -> int:
        return max(FLOOR, int(self._rows.get(table, 0) * SHARE))

    def _run(self, tables: list[str]) -> None:
        for table in tables:
            try:
                rows = self._analyse(table)
            except Exception:  # statistics are an optimisation: a failed analysis is logged, never raised
                log.warning("could not analyse %s after a bulk load", table, exc_info=True)
                continue
            with self._lock:
                self._rows[table] = rows

    def wait(self) -> None:
        """Let a running analysis finish (a test's check)."""
        running = self._running
        if running is not None:
            running.join()

    def close(self) -> None:
        """Start no more analyses, and let a running one finish (before the store closes its connections)."""
        with self._lock:
            self._closed = True
        self.wait()
