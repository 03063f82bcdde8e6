"""The PostgreSQL store: for campaigns that run many API and worker processes against one database.

The SQL is shared with SQLite (`sql/`); what differs is concurrency. Transactions are READ COMMITTED, and
every read-modify-write locks its rows with `SELECT … FOR UPDATE`, so concurrent changes to one instance or
contact, from any number of processes, queue on the row: the second sees the first's result (and the engine
answers 409). Contact search uses `pg_trgm` GIN indexes on lower(name), lower(email) and the phone digits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC
from functools import cache, partial
from typing import Any

import psycopg
from sqlalchemy import ARRAY, BigInteger, Connection, Dialect, Table, any_, create_engine, literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from ..models.contacts import Contact
from ..models.events import Event
from . import migrations
from . import schema as s
from .base import Page, PageRequest
from .growth import Growth
from .paging import cut_page
from .pg_ping import ping_rested_connections
from .phones import phone_query_digits
from .search_sample import RARE_TRIGRAMS
from .sql import RowLocks, SqlStore, SqlTx, pg_tail, rows, search
from .sql.outbox import NOTIFY_CHANNEL

log = logging.getLogger("cbworkflow.store")

# Rows each campaign-number count is split over: concurrent steps at one node add to different rows.
TALLY_SHARDS = 8
# A connection keeps the planner's estimates this long (`PostgresTx._estimate`), this many at most.
ESTIMATE_LIFETIME_S = 60.0
ESTIMATES_KEPT = 512
_ESTIMATES = "cbw_estimates"
# Where a transaction's connection counts the rows its bulk paths add (`growth.py`).
_GROWN = "cbw_grown"
# Where a connection keeps the name of each table's key sequence (`new_keys`).
_SEQUENCES = "cbw_sequences"
# Serialises schema migrations of concurrently starting processes (any constant shared by them all).
_MIGRATION_LOCK = 7_305_917_242


class PostgresLocks(RowLocks):
    def for_update(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update()

    def skip_locked(self, query: Select[Any], of: Table = s.instances) -> Select[Any]:
        return query.with_for_update(skip_locked=True, of=of)


def engine_url(url: str) -> str:
    """`postgresql://…` as given by users, with the psycopg 3 driver named for SQLAlchemy."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


_Processor = Callable[[Any], Any] | None


@cache
def _processors(dialect: Dialect, table: Table, names: tuple[str, ...]) -> list[_Processor]:
    """The bind processors SQLAlchemy applies to each column's values (JSON, times): the same for `COPY`."""
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def copy_rows(conn: Connection, table: Table, values: list[dict[str, Any]]) -> None:
    """Insert rows (dicts with the same keys) by `COPY`: each value goes through the bind processor an
    executemany would apply, so the rows stored are the same; psycopg writes them without parsing a statement."""
    names = tuple(values[0])
    processors = _processors(conn.dialect, table, names)
    columns = ", ".join(f'"{name}"' for name in names)
    with _copy(conn, f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        _grew(conn, table.name, len(values))
        for row in values:
            copy.write_row(
                [v if p is None else p(v) for p, v in zip(processors, map(row.__getitem__, names), strict=True)]
            )


def new_keys(conn: Connection, table: Table, count: int) -> list[int]:
    """`count` primary keys from the table's sequence, ascending, in one statement: rows written by `COPY` with
    them need not be read back for their keys (an import's tag rows name their contacts by key)."""
    sequences: dict[str, str] = conn.info.setdefault(_SEQUENCES, {})
    if table.name not in sequences:
        found = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%(table)s, 'pk')", {"table": table.name})
        sequences[table.name] = found.scalar_one()
    drawn = conn.exec_driver_sql(
        "SELECT nextval(CAST(%(sequence)s AS regclass)) FROM generate_series(1, %(count)s)",
        {"sequence": sequences[table.name], "count": count},
    )
    return sorted(pk for (pk,) in drawn)


def _grew(conn: Connection, table: str, rows: int) -> None:
    """Count rows a bulk path adds in this transaction (the store hands them to `Growth` at the commit)."""
    grown: Counter[str] = conn.info.setdefault(_GROWN, Counter())
    grown[table] += rows


@contextmanager
def _copy(conn: Connection, sql: str) -> Iterator[psycopg.Copy]:
    """A `COPY … FROM STDIN` on the transaction's connection. The driver's errors become SQLAlchemy's, as they
    would from an executemany, so the store maps them the same way (a unique key: 409; a deadlock: run again)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(sql) as copy:
            yield copy
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


# A search first collects up to this many matches by the trigram indexes (see `PostgresTx.search_contacts`).
SEARCH_CANDIDATES = 2_000
# Planner settings for one statement of the transaction: the bitmap of the trigram indexes, no ordered walk.
_BITMAP_ONLY = "SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off"
# ... or a b-tree's own search only: no scan, no bitmap (and so no trigram index, which has nothing else).
_BTREE_ONLY = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"
# The column each kind of key a batch's lookup is given is compared with (`PostgresTx.find_contacts`).
_KEY_COLUMNS = {"ids": "id", "external_ids": "external_id", "emails": "lower(email)", "phones": "phone_e164"}
_ANY_PLAN = (
    "SET LOCAL enable_indexscan TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT"
)


class PostgresTx(SqlTx):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tags.bulk = partial(copy_rows, self.conn)  # many new rows of a table (a batch's) go by COPY
        self.tags.new_keys = partial(new_keys, self.conn)
        self.tags.estimate = self._estimate

    def find_contacts(
        self, *, ids: Sequence[str], external_ids: Sequence[str], emails: Sequence[str], phones: Sequence[str]
    ) -> list[Contact]:
        """A batch's lookup: each key searched for alone along its own b-tree, then the contacts found read and
        locked in key order.

        Written as one `= ANY` list per kind of key, the planner chose by statistics that lag a growing table
        (an import fills it faster than they are taken) and by a cost of each key as a page read from disk. It
        read the whole table (54 ms for an import batch's 1,500 keys at 100,000 contacts, where the b-trees take
        3 ms), or the whole tenant along another index, or searched the emails' trigram index: 5-6 seconds for
        one batch. Here each key is searched for alone (`OFFSET 0` keeps the planner from joining the keys to
        the whole tenant by a hash), and for one key its own b-tree costs least once the table has any
        statistics (`growth.py` takes them early)."""
        given = {"ids": ids, "external_ids": external_ids, "emails": emails, "phones": phones}
        params: dict[str, Any] = {"tenant": self.tenant}
        branches = []
        for name, column in _KEY_COLUMNS.items():
            if given[name]:
                params[name] = list(given[name])
                branches.append(
                    f"SELECT c.pk FROM unnest(CAST(%({name})s AS text[])) AS k(v) CROSS JOIN LATERAL "
                    f"(SELECT pk FROM contacts WHERE tenant = %(tenant)s AND {column} = k.v OFFSET 0) AS c"
                )
        if not branches:
            return []
        self.conn.exec_driver_sql(_BTREE_ONLY)
        pks = sorted({pk for (pk,) in self.conn.exec_driver_sql(" UNION ALL ".join(branches), params)})
        self.conn.exec_driver_sql(_ANY_PLAN)
        if not pks:
            return []
        c = s.contacts.c
        query = select(s.contacts).where(c.tenant == self.tenant, c.pk == any_(literal(pks, ARRAY(BigInteger))))
        return self._contacts(self.conn.execute(self._locked(query.order_by(c.pk))).all())

    def _append_many(self, events: Sequence[Event], first: int) -> None:
        with _copy(self.conn, f"COPY events ({', '.join(rows.EVENT_COLUMNS)}) FROM STDIN") as copy:  # in order
            _grew(self.conn, "events", len(events))
            times = {when: when.astimezone(UTC) for when in {e.timestamp for e in events}}  # a step's share one
            for n, e in enumerate(events):
                copy.write_row(rows.event_row(self.tenant, e, times[e.timestamp], first + n))

    def _estimate(self, query: Select[Any]) -> int:
        """The rows `query` gives as the planner estimates them (its statistics know each tag's and county's
        share): a fraction of a millisecond, where counting them along an index took milliseconds. Statistics
        change only when a table is analysed, so each connection keeps an estimate for `ESTIMATE_LIFETIME_S`."""
        compiled = query.compile(dialect=self.conn.dialect)
        key = (compiled.string, tuple(sorted(compiled.params.items())))
        kept: dict[Any, tuple[float, int]] = self.conn.info.setdefault(_ESTIMATES, {})
        now = time.monotonic()
        if key in kept and kept[key][0] > now:
            return kept[key][1]
        plan = self.conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, compiled.params).scalar_one()
        rows = int((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])
        if len(kept) >= ESTIMATES_KEPT:
            kept.clear()
        kept[key] = (now + ESTIMATE_LIFETIME_S, rows)
        return rows

    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """Two plans, and a sample of the tenant's newest contacts picks (`search_sample.py`). A text many of
        them hold is found by walking the contacts newest first: a page comes within a few thousand. Any other
        is found by the `pg_trgm` indexes, searched for its three rarest trigrams only (a whole email's twenty
        read a million contacts' lists: 40 ms), each candidate then checked for the whole text; at most
        `SEARCH_CANDIDATES` of them, and the page is their newest. Past that (the sample was wrong), the walk."""
        words, digits = query.strip().lower(), phone_query_digits(query)
        sample = self.samples.of(self.tenant, partial(search.newest_texts, self.conn, self.tenant))
        windows = (sample.rarest(words, RARE_TRIGRAMS, _indexable), sample.rarest(digits or "", RARE_TRIGRAMS))
        if sample.common(words, digits) or not windows[0] or (digits and not windows[1]):
            return self._search_like(query, page)
        c = s.contacts.c
        self.conn.exec_driver_sql(_BITMAP_ONLY)
        where = search.held_where(self.tenant, words, digits, windows, page)
        found = self.conn.execute(select(c.pk).where(*where).limit(SEARCH_CANDIDATES + 1)).scalars().all()
        self.conn.exec_driver_sql(_ANY_PLAN)
        if len(found) > SEARCH_CANDIDATES:
            return self._search_like(query, page)
        pks, cursor = cut_page(sorted(found, reverse=True), page.limit, lambda pk: (pk,))
        if not pks:
            return Page([], None)
        chosen = self.conn.execute(select(s.contacts).where(c.pk.in_(pks)).order_by(c.pk.desc())).all()
        return Page(self._contacts(chosen), cursor)


def _indexable(window: str) -> bool:
    """Whether `pg_trgm` indexes these three characters as one trigram: ASCII letters and digits only (it splits
    words at anything else)."""
    return all(ch.isascii() and ch.isalnum() for ch in window)


class PostgresStore(SqlStore):
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self._url = make_url(url)
        # Custom plans always: psycopg prepares a statement after a few runs, and a generic plan made while a table
        # was nearly empty (or never analyzed) stays for the connection's life; on a growing table that plan can
        # scan the whole tenant for every lookup by id (seen: 65 contact creates/s at 60k contacts instead of 300).
        engine = create_engine(
            engine_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,  # a connection that rested is tried instead (pg_ping.py): no round trip per step
            pool_recycle=1800,
            # No parallel query: every statement is short and indexed, and starting parallel workers for a page
            # cost more than the page (a page of contacts by tag and county at a million: 21.7 ms, 5.1 ms without).
            connect_args={"options": "-c plan_cache_mode=force_custom_plan -c max_parallel_workers_per_gather=0"},
            json_serializer=s.json_text,
            json_deserializer=s.json_value,
        )
        ping_rested_connections(engine)
        self._threads = ThreadPoolExecutor(max_workers=2 * pool_size, thread_name_prefix="cbw-postgres")
        self._growth = Growth(self._analyse)
        super().__init__(engine, tx_class=PostgresTx, locks=PostgresLocks(), pools=[self._threads], shards=TALLY_SHARDS)

    def listen_for_commits(self, heard: Callable[[dict[str, int]], None], stop: threading.Event) -> None:
        """Call `heard` with `{tenant: last sequence}` each time any process commits events, until `stop` is set
        (on a connection of its own, `LISTEN`ing to what `sql/outbox.py` notifies). Raises when the connection
        drops; the caller reconnects."""
        dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while not stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    heads = _heads_of(note.payload)
                    if heads:
                        heard(heads)

    def describe(self) -> str:
        return self._url.render_as_string(hide_password=True)

    def _finish(self, conn: Connection, opened: list[SqlTx]) -> dict[str, int]:
        return pg_tail.finish(conn, opened, shard=random.randrange(self.shards), notify=self.notifies)

    def threads(self, writing: bool) -> Executor:
        return self._threads

    @contextmanager
    def _transaction(self, writing: bool) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            conn.info.pop(_GROWN, None)  # what a failed transaction on this connection counted
            yield conn
            grown = conn.info.pop(_GROWN, None)
        if grown:
            self._growth.add(grown)

    def _analyse(self, table: str) -> int:
        """Fresh planner statistics for `table`; the rows it holds now (as the statistics estimate them)."""
        with self._engine.connect() as conn:
            autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.exec_driver_sql(f'ANALYZE "{table}"')
            found = autocommit.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,))
            return max(0, int(found.scalar() or 0))

    async def close(self) -> None:
        """The transactions first (a last one may start an analysis), then the analysis, then the connections."""
        self._threads.shutdown(wait=True)
        await asyncio.to_thread(self._growth.close)
        await super().close()

    def migrate_sync(self) -> list[int]:
        with self._transaction(writing=True) as conn:
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


def _heads_of(payload: str) -> dict[str, int]:
    try:
        found: Any = json.loads(payload)
        return {str(k): int(v) for k, v in found.items()} if isinstance(found, dict) else {}
    except (ValueError, TypeError, AttributeError):
        return {}
