"""The statements one service call sends to the database, recorded once and replayed through the raw driver.

The baseline of in-process transitions is "the same statements through sqlite3 / psycopg": rather than a copy
of today's SQL that would drift as the store changes, the statements are recorded from a real transition and
replayed with fresh parameters for another instance at the same revision: its id, its contact's id, its primary
key, new event ids and the sequence numbers the replayed `event_sequences` upsert hands out.
They are recorded at the driver: the first statement of the call from SQLAlchemy's `before_cursor_execute`, and
from then on by a tap put in place of the connection's DBAPI connection, which every statement passes, SQLAlchemy's
and those the store sends past it (an `executemany` on the driver's cursor, a `COPY`). Values are what the driver
was given (enums as their values).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from cbworkflow.ids import new_id

HEX_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass
class Statement:
    sql: str
    params: Any
    kind: str  # "one" (execute), "many" (executemany) or "copy" (params: the rows written)


@dataclass
class Recording:
    """What one call executed, between the first statement and its commit."""

    statements: list[Statement] = field(default_factory=list)
    committed: bool = False

    def add(self, sql: str, params: Any, kind: str) -> None:
        if self.committed:
            return
        if sql.strip().upper() == "COMMIT":  # SQLite's store commits with a statement of its own
            self.commit()
        else:
            self.statements.append(Statement(sql, params, kind))

    def commit(self) -> None:
        if self.statements:
            self.committed = True

    def summary(self) -> list[str]:
        return [(f"{s.kind}: " if s.kind != "one" else "") + " ".join(s.sql.split())[:90] for s in self.statements]


class _CopyTap:
    def __init__(self, real: Any, rows: list[Any]) -> None:
        self._real, self._rows = real, rows

    def write_row(self, row: Any) -> None:
        self._rows.append(list(row))
        self._real.write_row(row)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _CursorTap:
    def __init__(self, real: Any, found: Recording) -> None:
        self._real, self._found = real, found

    def execute(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._found.add(sql, params, "one")
        self._real.execute(sql, *(() if params is None else (params,)), *args, **kwargs)
        return self

    def executemany(self, sql: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        rows = list(params)
        self._found.add(sql, rows, "many")
        self._real.executemany(sql, rows, *args, **kwargs)
        return self

    @contextmanager
    def copy(self, sql: str, *args: Any, **kwargs: Any) -> Iterator[_CopyTap]:
        rows: list[Any] = []
        self._found.add(sql, rows, "copy")
        with self._real.copy(sql, *args, **kwargs) as real:
            yield _CopyTap(real, rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._real)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _ConnectionTap:
    def __init__(self, real: Any, found: Recording) -> None:
        self._real, self._found = real, found

    def cursor(self, *args: Any, **kwargs: Any) -> _CursorTap:
        return _CursorTap(self._real.cursor(*args, **kwargs), self._found)

    def commit(self) -> None:
        self._found.commit()
        self._real.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def record(engine: Any) -> tuple[Recording, Callable[[], None]]:
    """Start recording the statements sent through `engine`'s connections; the returned function stops it."""
    found = Recording()
    tapped: dict[int, tuple[Any, Any]] = {}  # id of a pooled connection: (it, its DBAPI connection)

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        pooled = conn.connection
        if id(pooled) in tapped or found.committed:
            return  # the tap saw it
        found.add(statement, parameters, "many" if executemany else "one")
        tapped[id(pooled)] = (pooled, pooled.dbapi_connection)
        pooled.dbapi_connection = _ConnectionTap(pooled.dbapi_connection, found)

    def on_commit(conn: Any) -> None:
        found.commit()

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)

    def stop() -> None:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
        for pooled, real in tapped.values():
            pooled.dbapi_connection = real

    return found, stop


@dataclass(frozen=True)
class Target:
    """An instance the recording is replayed on, and the one it was recorded on."""

    instance_id: str
    contact_id: str
    pk: int


class Replayer:
    """Replays `recording` (made on `probe`) on other instances through a raw connection (`pg`: psycopg, else
    sqlite3 in autocommit mode, whose transaction the recording's own `BEGIN IMMEDIATE` opens)."""

    def __init__(self, recording: Recording, probe: Target, conn: Any, pg: bool) -> None:
        if not recording.committed:
            raise RuntimeError("the recording holds no committed transaction")
        self.statements = recording.statements
        self.probe = probe
        self.conn = conn
        self.pg = pg
        self.captured_last = max(_sequences(self.statements), default=0)

    def run(self, target: Target) -> None:
        ids: dict[str, str] = {self.probe.instance_id: target.instance_id, self.probe.contact_id: target.contact_id}
        last: int | None = None
        for statement in self.statements:
            params = _fresh(statement.params, ids, self.probe, target, "instance_pk" in statement.sql)
            if last is not None and _writes_events(statement.sql):
                params = _renumber(statement.sql, params, last - self.captured_last)
            cursor = self.conn.cursor()
            if statement.kind == "copy":
                with cursor.copy(statement.sql) as copy:
                    for row in params:
                        copy.write_row(row)
                continue
            if statement.kind == "many":
                cursor.executemany(statement.sql, params)
            else:
                cursor.execute(statement.sql, *(() if params is None else (params,)))
            if cursor.description is not None:
                rows = cursor.fetchall()
                if "event_sequences" in statement.sql and rows:
                    last = rows[0][0]
                if statement.sql.startswith("UPDATE instances") and not rows:  # the revision did not match
                    raise RuntimeError(f"the replay moved nothing on instance {target.instance_id}")
        if self.pg:
            self.conn.commit()
        else:
            self.conn.execute("COMMIT")


def _fresh(value: Any, ids: dict[str, str], probe: Target, target: Target, has_pk: bool) -> Any:
    """`value` with the probe's ids made the target's, other 12-hex ids (events') new, the probe's primary key the
    target's (in statements that name `instance_pk`), enums their values."""
    if isinstance(value, dict):
        return {k: _fresh(v, ids, probe, target, has_pk) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_fresh(v, ids, probe, target, has_pk) for v in value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str) and HEX_ID.match(value):
        if value not in ids:
            ids[value] = new_id()
        return ids[value]
    if has_pk and isinstance(value, int) and not isinstance(value, bool) and value == probe.pk:
        return target.pk
    return value


def _sequences(statements: list[Statement]) -> list[int]:
    found: list[int] = []
    for statement in statements:
        if not _writes_events(statement.sql):
            continue
        rows = statement.params if statement.kind != "one" else [statement.params]
        found.extend(_sequence_of(statement.sql, row) for row in rows)
    return found


def _writes_events(sql: str) -> bool:
    return sql.startswith(("INSERT INTO events ", "COPY events "))


def _sequence_of(sql: str, row: Any) -> int:
    if isinstance(row, dict):
        return int(row["sequence"])
    columns = [c.strip().strip('"') for c in sql.split("(", 1)[1].split(")", 1)[0].split(",")]
    return int(row[columns.index("sequence")])


def _renumber(sql: str, params: Any, shift: int) -> Any:
    """The events' sequence numbers moved by `shift`: what the replayed upsert of `event_sequences` handed out."""

    def one(row: Any) -> Any:
        if isinstance(row, dict):
            return {**row, "sequence": row["sequence"] + shift}
        columns = [c.strip().strip('"') for c in sql.split("(", 1)[1].split(")", 1)[0].split(",")]
        at = columns.index("sequence")
        return (*row[:at], row[at] + shift, *row[at + 1 :])

    return [one(row) for row in params] if isinstance(params, list) else one(params)
