"""The PostgreSQL store: for campaigns that run many API and worker processes against one database.

The SQL is shared with SQLite (`sql.py`); what differs is concurrency. Transactions are READ COMMITTED, and
every read-modify-write locks its rows with `SELECT … FOR UPDATE`, so concurrent changes to one instance or
contact, from any number of processes, queue on the row: the second sees the first's result (and the engine
answers 409). Contact search uses `pg_trgm` GIN indexes on lower(name), lower(email) and the phone digits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import Select

from ..errors import Conflict, StoreError
from . import migrations
from . import schema as s
from .base import SnapshotCache, Store, Tx
from .sql import SqlTx

T = TypeVar("T")
log = logging.getLogger("cbworkflow.store")

# Serialises schema migrations of concurrently starting processes (any constant shared by them all).
_MIGRATION_LOCK = 7_305_917_242


class PostgresTx(SqlTx):
    def _lock_clause(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update()

    def _skip_locked(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update(skip_locked=True, of=s.instances)


def engine_url(url: str) -> str:
    """`postgresql://…` as given by users, with the psycopg 3 driver named for SQLAlchemy."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class PostgresStore(Store):
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self._url = make_url(url)
        # Custom plans always: psycopg prepares a statement after a few runs, and a generic plan made while a table
        # was nearly empty (or never analyzed) stays for the connection's life; on a growing table that plan can
        # scan the whole tenant for every lookup by id (seen: 65 contact creates/s at 60k contacts instead of 300).
        self._engine = create_engine(
            engine_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
        )
        self._snapshots = SnapshotCache()
        self._threads = ThreadPoolExecutor(max_workers=2 * pool_size, thread_name_prefix="cbw-postgres")

    def describe(self) -> str:
        return self._url.render_as_string(hide_password=True)

    def _run(self, tenant: str, fn: Callable[[Tx], T], writing: bool) -> T:
        try:
            with self._engine.begin() as conn:
                return fn(PostgresTx(conn, tenant, self._snapshots, writing=writing))
        except IntegrityError as exc:
            raise Conflict("the change clashes with an existing record (a duplicate id, external id or key)") from exc
        except OperationalError as exc:
            raise StoreError("the database is busy or unavailable; try again") from exc

    async def read(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._run, tenant, fn, False)

    async def write(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._run, tenant, fn, True)

    def migrate_sync(self) -> list[int]:
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            applied = migrations.migrate(conn)
            autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar()
        if autovacuum != "on":
            # Without statistics the planner walks the wrong indexes (a list by tag: 130 ms instead of 10 ms at
            # 20k contacts). Refresh them at each start, and say so: only autovacuum keeps them fresh in between.
            log.warning("PostgreSQL's autovacuum is off: analysing the tables now; run ANALYZE after bulk loads")
            with self._engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        return applied

    async def migrate(self) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.migrate_sync)

    async def ping(self) -> None:
        def check() -> None:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        await asyncio.get_running_loop().run_in_executor(self._threads, check)

    async def close(self) -> None:
        self._threads.shutdown(wait=True)
        self._engine.dispose()
