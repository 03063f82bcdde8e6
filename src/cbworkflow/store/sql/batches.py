"""The part of a tenant's `SqlTx` that campaign-scale batches use: a contacts import's lookup of a whole batch in
one query, its inserts (by the backend's bulk path when many), the chunks a job stages; the contact ids a bulk
enrolment walks (only the ids: it needs no contact, nor their instance ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, or_, select
from sqlalchemy.sql import ColumnElement, Select

from ...models.contacts import Contact
from .. import schema as s
from ..base import Page, PageRequest
from ..filters import ContactFilter
from . import rows
from .tags import CONTACTS, TagRows


class BatchRows:
    """Batch reads and writes of `SqlTx` (its own helpers named below)."""

    conn: Connection
    tenant: str
    tags: TagRows

    if TYPE_CHECKING:  # SqlTx's own

        def _locked(self, query: Select[Any]) -> Select[Any]: ...
        def _contacts(self, found: Sequence[Row[Any]]) -> list[Contact]: ...
        def _contacts_where(self, query: Select[Any], where: ContactFilter) -> tuple[Select[Any], Any]: ...
        def _page(
            self, query: Select[Any], table: Any, page: PageRequest, order: tuple[Any, Any] | None = None
        ) -> tuple[list[Row[Any]], str | None]: ...

    def list_contact_ids(self, where: ContactFilter, page: PageRequest) -> Page[str]:
        query, order = self._contacts_where(select(s.contacts.c.id, s.contacts.c.created_at, s.contacts.c.pk), where)
        found, cursor = self._page(query, s.contacts, page, order)
        return Page([row.id for row in found], cursor)

    def find_contacts(
        self, *, ids: Sequence[str], external_ids: Sequence[str], emails: Sequence[str], phones: Sequence[str]
    ) -> list[Contact]:
        c = s.contacts.c
        wanted: list[ColumnElement[bool]] = []
        if ids:
            wanted.append(rows.among(self.conn, c.id, ids))
        if external_ids:
            wanted.append(rows.among(self.conn, c.external_id, external_ids))
        if emails:  # along ix_contacts_email_lower (PostgreSQL) or ix_contacts_email_nocase (SQLite)
            postgres = self.conn.dialect.name == "postgresql"
            wanted.append(rows.among(self.conn, func.lower(c.email) if postgres else c.email.collate("NOCASE"), emails))
        if phones:
            wanted.append(rows.among(self.conn, c.phone_e164, phones))
        if not wanted:
            return []
        # The tenant in each branch, so each is one index's search (SQLite's MULTI-INDEX OR, PostgreSQL's BitmapOr)
        branches = [and_(c.tenant == self.tenant, one) for one in wanted]
        query = select(s.contacts).where(or_(*branches)).order_by(c.pk)
        return self._contacts(self.conn.execute(self._locked(query)).all())

    def insert_contacts(self, contacts: Sequence[Contact]) -> None:
        if contacts:
            self.tags.insert_records(CONTACTS, [rows.contact_values(contact) for contact in contacts], contacts)

    def contacts_with_instances(self, contact_ids: Sequence[str]) -> set[str]:
        if not contact_ids:
            return set()
        i = s.instances.c
        query = select(i.contact_id).where(i.tenant == self.tenant, rows.among(self.conn, i.contact_id, contact_ids))
        query = query.distinct()
        return set(self.conn.execute(query).scalars())

    def stage_job_rows(self, job_id: str, seq: int, items: Sequence[dict[str, Any]]) -> None:
        values = {"tenant": self.tenant, "job_id": job_id, "seq": seq, "chunk": list(items)}
        self.conn.execute(insert(s.job_rows), values)

    def job_rows(self, job_id: str, seq: int) -> list[dict[str, Any]] | None:
        r = s.job_rows.c
        query = select(r.chunk).where(r.tenant == self.tenant, r.job_id == job_id, r.seq == seq)
        found = self.conn.execute(query).scalar_one_or_none()
        return None if found is None else list(found)

    def delete_job_rows(self, job_id: str, seq: int | None = None) -> None:
        r = s.job_rows.c
        statement = delete(s.job_rows).where(r.tenant == self.tenant, r.job_id == job_id)
        self.conn.execute(statement if seq is None else statement.where(r.seq == seq))
