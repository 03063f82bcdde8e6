"""The embedded store: one SQLite file in WAL mode.

Why it does not lock up under load: all writes of a process go through one writer thread, each in a
`BEGIN IMMEDIATE` transaction, so writers inside a process queue in Python instead of racing for SQLite's lock,
and a writer never upgrades a read lock (the usual cause of "database is locked"). Processes on one file take
turns at a write gate (`WriteGate`), woken as soon as it is free. Reads run on a small pool of threads and see a
consistent WAL snapshot without blocking writers.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, text

from ..errors import StoreError
from ..models.events import Event
from . import migrations
from . import schema as s
from .base import UNAVAILABLE, Page, PageRequest
from .paging import cut_page, int_cursor
from .phones import phone_query_digits
from .search_sample import RARE_TRIGRAMS, Sample
from .sql import RowLocks, SqlStore, SqlTx, rows, search

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteTx(SqlTx):
    """SQL shared with PostgreSQL, plus trigram full-text search."""

    def write_events(self, events: Sequence[Event], first: int) -> None:
        """Through the driver whatever their number: a step's four events through SQLAlchemy's per-row parameter
        processing cost more than the insert (PostgreSQL keeps that path below a bulk batch, where COPY would not
        pay for itself)."""
        self._append_many(events, first)

    def _append_many(self, events: Sequence[Event], first: int) -> None:
        marks = ", ".join("?" * len(rows.EVENT_COLUMNS))
        sql = f"INSERT INTO events ({', '.join(rows.EVENT_COLUMNS)}) VALUES ({marks})"
        times = {when: s.UTCDateTime.stored_text(when) for when in {e.timestamp for e in events}}  # a step's share one
        stored = [rows.event_row(self.tenant, e, times[e.timestamp], first + n) for n, e in enumerate(events)]
        rows.driver_executemany(self.conn, sql, stored)

    def search_contacts(self, query: str, page: PageRequest) -> Page[Any]:
        """By the FTS5 trigram table, newest first. A sample of the tenant's newest contacts picks how
        (`search_sample.py`): a text many of them hold is matched whole, walking newest first, and a page comes
        at once; any other is matched by its three rarest trigrams, each candidate then checked for the whole
        text. (The whole of an email or a full name is twenty trigrams, most of them common: 10-20 ms at a
        million contacts.) A text with letters beyond ASCII is always matched whole: the check would need the
        FTS5 folding of case, which SQLite's `lower()` does not do beyond ASCII."""
        words, digits = query.strip(), phone_query_digits(query)
        params: dict[str, Any] = {"tenant": self.tenant, "n": page.limit + 1}
        sql = "SELECT rowid FROM contacts_fts WHERE contacts_fts MATCH :match AND tenant = :tenant"
        if page.cursor is not None:
            sql += " AND rowid < :after"
            params["after"] = int_cursor(page.cursor)
        lowered = words.lower()
        whole = ['{name email} : "' + words.replace('"', '""') + '"']
        if digits:
            whole.append('phone_digits : "' + digits + '"')
        params["match"] = " OR ".join(f"({term})" for term in whole)
        if words.isascii() and len(words) >= 3:
            # Either plan checks the whole text the same way, so a page does not depend on the plan: FTS5 folds
            # case beyond ASCII (a Kelvin sign K is a k to it), `lower()` does not.
            checks = ["instr(lower(name), :words)", "instr(lower(email), :words)"]
            if digits:
                checks.append("instr(phone_digits, :digits)")
            sql += f" AND ({' OR '.join(f'{check} > 0' for check in checks)})"
            params |= {"words": lowered, "digits": digits}
            sample = self.samples.of(self.tenant, partial(search.newest_texts, self.conn, self.tenant))
            if not sample.common(lowered, digits):
                params["match"] = " OR ".join(_rare_terms(sample, lowered, digits))
        newest = self.conn.execute(text(sql + " ORDER BY rowid DESC LIMIT :n"), params)
        pks, cursor = cut_page([row[0] for row in newest], page.limit, lambda pk: (pk,))
        if not pks:
            return Page([], None)
        # By rowid alone: with the tenant in the WHERE, SQLite would walk the tenant's whole index instead.
        c = s.contacts.c
        rows = self.conn.execute(select(s.contacts).where(c.pk.in_(pks)).order_by(c.pk.desc())).all()
        rows = [row for row in rows if row.tenant == self.tenant]
        return Page(self._contacts(rows), cursor)


def _rare_terms(sample: Sample, lowered: str, digits: str | None) -> list[str]:
    """FTS5 queries for the rarest trigrams of the text (and of its digits): one of them holds every match."""
    if digits == lowered:  # only digits: the same trigrams in all three columns, read once
        return [_fts_terms("{name email phone_digits}", sample.rarest(lowered, RARE_TRIGRAMS))]
    rare = [_fts_terms("{name email}", sample.rarest(lowered, RARE_TRIGRAMS))]
    if digits:
        rare.append(_fts_terms("phone_digits", sample.rarest(digits, RARE_TRIGRAMS)))
    return rare


def _fts_terms(columns: str, windows: list[str]) -> str:
    """An FTS5 query: every one of `windows` (three characters each) in `columns`."""
    return "(" + " AND ".join(f'{columns} : "' + w.replace('"', '""') + '"' for w in windows) + ")"


class WriteGate:
    """The right to write, between processes that share one file: an exclusive `flock` on a file beside it, held
    for each write transaction (and a thread lock, as `flock` is per open file, not per thread).

    SQLite's own busy handler makes a second process sleep and try again (1, 2, 5 … up to 100 ms between tries), so
    with two `serve` processes on one file some writes waited seconds behind a stream of the other's (p99 3.2 to
    3.5 s at 32 connections; trying again every 2 ms instead still gave 0.8 s). A waiter here blocks in `flock`
    and the kernel wakes it the moment the gate is free; it gives up after the store's busy timeout (the database
    is busy: 503), as SQLite would. A process that dies lets go at once; SQLite's busy timeout still covers
    programs that do not take the gate."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._threads = threading.Lock()
        self._timeout_s = timeout_s

    def __enter__(self) -> None:
        if not self._threads.acquire(timeout=self._timeout_s):
            raise StoreError(UNAVAILABLE)
        try:
            self._take()
        except BaseException:
            self._threads.release()
            raise

    def _take(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        # `flock` cannot wait for a limited time: a helper thread waits, on a duplicate of the descriptor (the
        # same open file, so the same lock); if this thread stops waiting first, the helper lets go on arrival.
        spare, taken, decided = os.dup(self._fd), threading.Event(), threading.Lock()
        abandoned = False

        def wait() -> None:
            try:
                fcntl.flock(spare, fcntl.LOCK_EX)
                with decided:
                    if abandoned:
                        fcntl.flock(spare, fcntl.LOCK_UN)
                    else:
                        taken.set()
            finally:
                os.close(spare)

        threading.Thread(target=wait, name="cbw-sqlite-gate", daemon=True).start()
        if taken.wait(self._timeout_s):
            return
        with decided:
            if taken.is_set():
                return
            abandoned = True
        raise StoreError(UNAVAILABLE)

    def __exit__(self, *_: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Once: a second `os.close` could close whatever file was given the number since."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class SQLiteStore(SqlStore):
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", busy_timeout_s: float = 30.0) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():  # private from the start: SQLite gives its -wal and -shm files the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        engine = create_engine(
            f"sqlite+pysqlite:///{path}",
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s, "isolation_level": None},
            pool_size=8,
            max_overflow=8,
            json_serializer=s.json_text,
            json_deserializer=s.json_value,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        # Each store thread keeps its connection for the store's life: taking one from the pool and giving it
        # back (with its reset) for every transaction cost about a tenth of a step.
        self._local = threading.local()
        self._held: list[Connection] = []
        self._held_lock = threading.Lock()
        self._gate = WriteGate(path.with_name(path.name + "-writer.lock"), busy_timeout_s)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbw-sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cbw-sqlite-reader")
        super().__init__(engine, tx_class=SQLiteTx, locks=RowLocks(), pools=[self._writer, self._readers])

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def threads(self, writing: bool) -> Executor:
        return self._writer if writing else self._readers

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self._engine.connect()
            with self._held_lock:
                self._held.append(conn)
        return conn

    def _let_go(self, conn: Connection) -> None:
        """A connection whose transaction could not be ended is not used again."""
        self._local.conn = None
        with self._held_lock:
            if conn in self._held:
                self._held.remove(conn)
        conn.invalidate()

    @contextmanager
    def _transaction(self, writing: bool) -> Iterator[Connection]:
        with self._gate if writing else nullcontext():
            conn = self._connection()
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
            try:
                yield conn
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                try:
                    conn.exec_driver_sql("ROLLBACK")
                except Exception:
                    self._let_go(conn)
                raise

    async def close(self) -> None:
        for pool in (self._writer, self._readers):
            pool.shutdown(wait=True)  # the threads end first: no connection is in use after this
        with self._held_lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self._gate.close()
        await super().close()

    def migrate_sync(self) -> list[int]:
        with self._transaction(writing=True) as conn:
            return migrations.migrate(conn)
