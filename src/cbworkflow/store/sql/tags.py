"""Tags in SQL: one row per (record, tag) in a tag table beside the record's, so a tag filter walks an index.

Lists filtered by tags walk the rarest tag's index (tenant, tag, created_at, pk) and check the others per row,
so a rare tag costs as little as a common one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, exists, func, insert, select
from sqlalchemy.sql import ColumnElement, Select

from .. import schema as s
from .rows import among


@dataclass(frozen=True)
class Tagged:
    """A kind of record with tags: its table, its tag table, and the tag table's column naming the record."""

    table: Table
    tags: Table
    fk: str

    @property
    def link(self) -> Any:
        return self.tags.c[self.fk]


CONTACTS = Tagged(s.contacts, s.contact_tags, "contact_pk")
TEMPLATES = Tagged(s.templates, s.template_tags, "template_pk")
INSTANCES = Tagged(s.instances, s.instance_tags, "instance_pk")


BulkInsert = Callable[[Table, list[dict[str, Any]]], None]
NewKeys = Callable[[Table, int], list[int]]
Estimate = Callable[[Select[Any]], int]
MANY_ROWS = 100
"""From this many new rows of one table in one statement (a batch of an import or a bulk enrolment), a backend
may write them by a path of its own (PostgreSQL: `COPY`)."""


class TagRows:
    """The tag rows of one tenant, on one connection."""

    def __init__(self, conn: Connection, tenant: str, bulk: BulkInsert | None = None) -> None:
        self.conn = conn
        self.tenant = tenant
        self.bulk = bulk
        self.new_keys: NewKeys | None = None  # primary keys drawn ahead for rows the bulk path writes
        self.estimate: Estimate | None = None  # the rows a query gives, from the planner's statistics

    def insert_many(self, table: Table, values: list[dict[str, Any]]) -> None:
        """Insert rows (dicts with the same keys): by the backend's bulk path when there are many, else in one
        executemany."""
        if self.bulk is not None and len(values) >= MANY_ROWS:
            self.bulk(table, values)
        else:
            self.conn.execute(insert(table), values)

    def having_all(
        self, query: Select[Any], kind: Tagged, tags: Sequence[str], rival: Select[Any] | None = None
    ) -> tuple[Select[Any], Any]:
        """Filter `query` to records with every tag; also the (created_at, pk) pair to page along (None: the
        record's own). `rival`: the same records narrowed by their own indexed columns (a county); where the
        backend can estimate sizes (`estimate`) and it holds fewer than the rarest tag, the list walks that
        column's index instead and checks every tag per row (a list by "voter" and a county: 73 rows read at a
        million contacts instead of 1,600)."""
        if not tags:
            return query, None
        if len(tags) > 1:  # walk along the rarest tag; the others are checked per row
            tags = sorted(tags, key=lambda tag: self._size(self._tagged(kind, tag)))
        if rival is not None and self.estimate is not None:
            if self.estimate(rival) < self.estimate(self._tagged(kind, tags[0])):
                return query.where(*self.exist(kind, tags)), None
        first = kind.tags.alias("first_tag")  # an alias, so the EXISTS checks of the other tags stay their own
        link = first.c[kind.fk]
        query = query.join(first, link == kind.table.c.pk).where(first.c.tenant == self.tenant, first.c.tag == tags[0])
        return query.where(*self.exist(kind, tags[1:])), (first.c.created_at, link)

    def exist(self, kind: Tagged, tags: Sequence[str]) -> list[ColumnElement[bool]]:
        """One EXISTS per tag: the record carries it."""
        t = kind.tags.c
        return [exists().where(t.tenant == self.tenant, t.tag == tag, kind.link == kind.table.c.pk) for tag in tags]

    def _tagged(self, kind: Tagged, tag: str) -> Select[Any]:
        t = kind.tags.c
        return select(t.tag).where(t.tenant == self.tenant, t.tag == tag)

    def _size(self, query: Select[Any], cap: int = 10_000) -> int:
        """How many rows `query` gives: the backend's estimate, else counted along its index, at most `cap`."""
        if self.estimate is not None:
            return self.estimate(query)
        return int(self.conn.execute(select(func.count()).select_from(query.limit(cap).subquery())).scalar_one())

    def put(self, kind: Tagged, pk: int, tags: Sequence[str], created_at: datetime, *, replace: bool) -> None:
        """Make the tag rows of record `pk` equal `tags`, touching only the rows that change."""
        stored = set(self.conn.execute(select(kind.tags.c.tag).where(kind.link == pk)).scalars()) if replace else set()
        gone = stored - set(tags)
        if gone:
            self.conn.execute(delete(kind.tags).where(kind.link == pk, kind.tags.c.tag.in_(gone)))
        rows = [
            {"tenant": self.tenant, "tag": tag, kind.fk: pk, "created_at": created_at}
            for tag in tags
            if tag not in stored
        ]
        if rows:
            self.conn.execute(insert(kind.tags), rows)

    def insert_records(self, kind: Tagged, values: list[dict[str, Any]], records: Sequence[Any]) -> None:
        """Insert new records (`values`, their rows) and their tags (`records[i].tags`) in a few statements.

        The rows go in one plain executemany, which the PostgreSQL driver pipelines (an INSERT … RETURNING of a
        batch, in order, is rewritten into one huge statement that costs more to parse than to run); their keys,
        needed only for tag rows, are then read back in one query by id. Many rows take the backend's bulk path,
        with their keys drawn ahead, when any has tags, where the backend can (`new_keys`): nothing is read back."""
        table = kind.table
        tagged = [record for record in records if record.tags]
        pks: dict[str, int] = {}
        if tagged and self.bulk is not None and self.new_keys is not None and len(values) >= MANY_ROWS:
            keys = self.new_keys(table, len(values))
            values = [{**row, "pk": pk} for row, pk in zip(values, keys, strict=True)]
            pks = {record.id: pk for record, pk in zip(records, keys, strict=True)}
        self.insert_many(table, values)
        if not tagged:
            return
        if not pks:
            found = self.conn.execute(
                select(table.c.id, table.c.pk).where(
                    table.c.tenant == self.tenant, among(self.conn, table.c.id, [r.id for r in tagged])
                )
            )
            pks = dict(found.all())
        tag_rows = [
            {"tenant": self.tenant, "tag": tag, kind.fk: pks[record.id], "created_at": record.created_at}
            for record in tagged
            for tag in record.tags
        ]
        self.insert_many(kind.tags, tag_rows)

    def delete_record(self, kind: Tagged, record_id: str) -> bool:
        """Delete a record and its tag rows; false when there was no such record."""
        table = kind.table
        pk: int | None = self.conn.execute(
            delete(table).where(table.c.tenant == self.tenant, table.c.id == record_id).returning(table.c.pk)
        ).scalar_one_or_none()
        if pk is None:
            return False
        self.conn.execute(delete(kind.tags).where(kind.link == pk))
        return True
