"""`SqlStore`: what the SQLite and PostgreSQL stores share, from a connection to a committed transaction.

A backend says how a transaction begins (`_transaction`), which threads run reads and writes, how it locks
rows and which `Tx` class searches its contacts; the rest (binding a transaction to a tenant or to the system,
mapping driver errors to the store's, ping, close) is here once.
"""

from __future__ import annotations

import random
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ...errors import Conflict, StoreError
from ..base import CLASH, UNAVAILABLE, SnapshotCache, Store, SystemTx, Tx
from ..search_sample import Samples
from .outbox import flush_events
from .system import SqlSystemTx
from .tally_rows import write_tallies
from .tx import RowLocks, SqlTx

T = TypeVar("T")
X = TypeVar("X")

RERUN_STATES = frozenset({"40P01", "40001"})  # PostgreSQL's deadlock_detected and serialization_failure
RERUNS = 5


class SqlStore(Store):
    def __init__(
        self,
        engine: Engine,
        *,
        tx_class: type[SqlTx],
        locks: RowLocks,
        pools: list[ThreadPoolExecutor],
        shards: int = 1,
    ) -> None:
        self._engine = engine
        self._tx_class = tx_class
        self._locks = locks
        self._pools = pools
        self._snapshots = SnapshotCache()
        self._samples = Samples()
        self.shards = shards
        self.notifies = engine.dialect.name == "postgresql"  # other processes hear of new events (outbox.py)

    @abstractmethod
    def _transaction(self, writing: bool) -> AbstractContextManager[Connection]:
        """A connection inside a transaction that commits when the block ends and rolls back on an exception."""

    def _run(self, bind: Callable[[Connection, list[SqlTx]], X], fn: Callable[[X], T], writing: bool) -> T:
        """Run `fn` in one transaction. One that the database chose to end (a deadlock, say) runs again from the
        start, a few times: `fn` has no effect outside the transaction (the JSON store re-runs it the same way).
        So does one whose connection dropped before it began to commit (nothing of it was kept; the pool then
        replaces every connection as old); one that dropped while committing may have been kept, and is not."""
        for attempt in range(1, RERUNS + 1):
            heads: dict[str, int] = {}
            committing = False
            try:
                with self._transaction(writing) as conn:
                    opened: list[SqlTx] = []
                    result = fn(bind(conn, opened))
                    committing = writing
                    if writing:
                        heads = self._finish(conn, opened)
            except IntegrityError as exc:
                raise Conflict(CLASH) from exc
            except OperationalError as exc:
                dropped = exc.connection_invalidated and not committing
                if attempt < RERUNS and (dropped or getattr(exc.orig, "sqlstate", None) in RERUN_STATES):
                    time.sleep(random.uniform(0.001, 0.01 * attempt))  # let the other transaction finish first
                    continue
                raise StoreError(UNAVAILABLE) from exc
            if heads:
                self._committed(heads)
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _finish(self, conn: Connection, opened: list[SqlTx]) -> dict[str, int]:
        """What a writing transaction kept for its end: the campaign numbers (they move in the same transaction as
        the steps they count), then the events, numbered (last: their lock is the hottest). `{tenant: last}`."""
        write_tallies(conn, [(tx.tenant, tx.tally) for tx in opened], shard=random.randrange(self.shards))
        return flush_events(conn, opened, notify=self.notifies)

    def _tenant_tx(self, conn: Connection, tenant: str, writing: bool, opened: list[SqlTx]) -> SqlTx:
        tx = self._tx_class(conn, tenant, self._snapshots, self._locks, writing=writing, samples=self._samples)
        opened.append(tx)
        return tx

    def run_tenant(self, tenant: str, fn: Callable[[Tx], T], writing: bool) -> T:
        return self._run(lambda conn, opened: self._tenant_tx(conn, tenant, writing, opened), fn, writing)

    def run_system(self, fn: Callable[[SystemTx], T], writing: bool) -> T:
        def bind(conn: Connection, opened: list[SqlTx]) -> SystemTx:
            return SqlSystemTx(conn, self._locks, lambda tenant: self._tenant_tx(conn, tenant, writing, opened))

        return self._run(bind, fn, writing)

    def ping_sync(self) -> None:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True)
        self._engine.dispose()
