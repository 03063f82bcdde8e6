"""`Tx` over SQLAlchemy Core: the SQL shared by the SQLite and PostgreSQL stores.

Every statement filters on `self.tenant`. Lists use keyset pagination on (created_at, pk), newest first, so a
page costs the same at row 10 and at row 1,000,000. The backend modules add what differs: connections, locking
and contact search.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, Row, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement, Select

from ..errors import InvalidInput
from ..models.access import Role, Tenant, Token
from ..models.contacts import Contact
from ..models.events import Event
from ..models.instances import MOVABLE, TERMINAL, WorkflowInstance
from ..models.templates import Node, TemplateVersion, WorkflowTemplate
from . import schema as s
from .base import (
    BAD_CURSOR,
    ContactFilter,
    DueWork,
    IdempotentResponse,
    InstanceFilter,
    Page,
    PageRequest,
    Snapshot,
    SnapshotCache,
    TaskFilter,
    TokenRecord,
    Tx,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from .phones import phone_digits, phone_query_digits

_NODE_MAP: TypeAdapter[dict[str, Node]] = TypeAdapter(dict[str, Node])
_TEMPLATE_BODY_FIELDS = (
    "name",
    "description",
    "version",
    "start_node",
    "nodes",
    "triggers",
    "tags",
    "metadata",
)


def _keyset(created: Any, pk: Any, cursor: str | None) -> ColumnElement[bool] | None:
    """Rows after the cursor in (created_at DESC, pk DESC) order."""
    if cursor is None:
        return None
    when, last_pk = decode_cursor(cursor, 2)
    try:
        when_dt = datetime.fromisoformat(when)
    except (TypeError, ValueError):
        raise InvalidInput(BAD_CURSOR) from None
    if when_dt.tzinfo is None:
        raise InvalidInput(BAD_CURSOR)
    last = cursor_int(last_pk)
    return or_(created < when_dt, and_(created == when_dt, pk < last))


class SqlTx(Tx):
    """A transaction on one SQLAlchemy connection, scoped to a tenant."""

    def __init__(self, conn: Connection, tenant: str, snapshots: SnapshotCache, *, writing: bool) -> None:
        self.conn = conn
        self.tenant = tenant
        self.snapshots = snapshots
        self.writing = writing

    # ------------------------------------------------------------------ helpers
    def _page(
        self, query: Select[Any], table: Any, page: PageRequest, order: tuple[Any, Any] | None = None
    ) -> tuple[list[Row[Any]], str | None]:
        """Newest first on (created_at, pk), or on `order`: the same two values taken from a tag row."""
        created, pk = order or (table.c.created_at, table.c.pk)
        after = _keyset(created, pk, page.cursor)
        if after is not None:
            query = query.where(after)
        rows = list(self.conn.execute(query.order_by(created.desc(), pk.desc()).limit(page.limit + 1)).all())
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            last = rows[-1]
            return rows, encode_cursor(last.created_at.isoformat(), last.pk)
        return rows, None

    def _tagged(
        self, query: Select[Any], table: Any, tag_table: Any, fk: str, tags: Sequence[str]
    ) -> tuple[Select[Any], tuple[Any, Any] | None]:
        """Filter `query` to records with every tag. With tags, the page is walked along the first tag's index
        (tenant, tag, created_at, pk), so a rare tag costs as little as a common one."""
        if not tags:
            return query, None
        if len(tags) > 1:  # walk along the rarest tag; the others are checked per row
            tags = sorted(tags, key=lambda tag: self._tag_count(tag_table, tag))
        first = tag_table.alias("first_tag")  # an alias, so the EXISTS checks of the other tags stay their own
        link = getattr(first.c, fk)
        query = query.join(first, link == table.c.pk).where(first.c.tenant == self.tenant, first.c.tag == tags[0])
        for clause in self._tag_filter(table, tag_table, fk, tags[1:]):
            query = query.where(clause)
        return query, (first.c.created_at, link)

    def _lock_clause(self, query: Select[Any]) -> Select[Any]:
        """Row locks for read-modify-write; SQLite's writer already holds the database lock."""
        return query

    def _skip_locked(self, query: Select[Any]) -> Select[Any]:
        """Lock the rows picked, passing over rows another transaction holds (PostgreSQL); SQLite has one writer."""
        return query

    def _tag_count(self, tag_table: Any, tag: str, cap: int = 10_000) -> int:
        """How many records carry `tag`, counted along its index and at most `cap`."""
        hits = select(tag_table.c.tag).where(tag_table.c.tenant == self.tenant, tag_table.c.tag == tag).limit(cap)
        return int(self.conn.execute(select(func.count()).select_from(hits.subquery())).scalar_one())

    def _set_tags(
        self, table: Any, fk: str, pk: int, tags: Sequence[str], created_at: datetime, *, replace: bool
    ) -> None:
        """Make the tag rows of record `pk` equal `tags`, touching only the rows that change."""
        link = getattr(table.c, fk)
        stored = set(self.conn.execute(select(table.c.tag).where(link == pk)).scalars()) if replace else set()
        gone = stored - set(tags)
        if gone:
            self.conn.execute(delete(table).where(link == pk, table.c.tag.in_(gone)))
        rows = [
            {"tenant": self.tenant, "tag": tag, fk: pk, "created_at": created_at} for tag in tags if tag not in stored
        ]
        if rows:
            self.conn.execute(insert(table), rows)

    def _delete_tagged(self, table: Any, tag_table: Any, fk: str, record_id: str) -> int | None:
        """Delete a record and its tag rows; its pk, or None when there was no such record."""
        pk: int | None = self.conn.execute(
            delete(table).where(table.c.tenant == self.tenant, table.c.id == record_id).returning(table.c.pk)
        ).scalar_one_or_none()
        if pk is not None:
            self.conn.execute(delete(tag_table).where(getattr(tag_table.c, fk) == pk))
        return pk

    # ------------------------------------------------------------------ tenants and tokens
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self.conn.execute(select(s.tenants).where(s.tenants.c.id == tenant_id)).first()
        return Tenant(id=row.id, name=row.name, created_at=row.created_at) if row else None

    def insert_tenant(self, tenant: Tenant) -> None:
        self.conn.execute(insert(s.tenants).values(**tenant.model_dump()))

    def count_tenants(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(s.tenants)).scalar_one())

    @staticmethod
    def _token(row: Row[Any]) -> Token:
        return Token(
            id=row.id,
            tenant=row.tenant,
            role=Role(row.role),
            name=row.name,
            created_at=row.created_at,
        )

    def find_token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        row = self.conn.execute(select(s.tokens).where(s.tokens.c.secret_hash == secret_hash)).first()
        return TokenRecord(token=self._token(row), secret_hash=row.secret_hash) if row else None

    def insert_token(self, record: TokenRecord) -> None:
        token = record.token
        self.conn.execute(
            insert(s.tokens).values(
                tenant=token.tenant,
                id=token.id,
                role=token.role.value,
                name=token.name,
                secret_hash=record.secret_hash,
                created_at=token.created_at,
            )
        )

    def get_token_record(self, token_id: str) -> TokenRecord | None:
        t = s.tokens.c
        row = self.conn.execute(select(s.tokens).where(t.tenant == self.tenant, t.id == token_id)).first()
        return TokenRecord(token=self._token(row), secret_hash=row.secret_hash) if row else None

    def list_tokens(self, page: PageRequest) -> Page[Token]:
        rows, cursor = self._page(select(s.tokens).where(s.tokens.c.tenant == self.tenant), s.tokens, page)
        return Page([self._token(r) for r in rows], cursor)

    def delete_token(self, token_id: str) -> bool:
        t = s.tokens.c
        return bool(self.conn.execute(delete(s.tokens).where(t.tenant == self.tenant, t.id == token_id)).rowcount)

    # ------------------------------------------------------------------ contacts
    def _instance_ids_by_contact(self, contact_ids: Sequence[str]) -> dict[str, list[str]]:
        if not contact_ids:
            return {}
        i = s.instances.c
        rows = self.conn.execute(
            select(i.contact_id, i.id)
            .where(i.tenant == self.tenant, i.contact_id.in_(contact_ids))
            .order_by(i.created_at, i.pk)
        ).all()
        found: dict[str, list[str]] = {cid: [] for cid in contact_ids}
        for row in rows:
            found[row.contact_id].append(row.id)
        return found

    def _contacts(self, rows: Sequence[Row[Any]]) -> list[Contact]:
        links = self._instance_ids_by_contact([r.id for r in rows])
        return [Contact.model_validate({**r._mapping, "workflow_instance_ids": links.get(r.id, [])}) for r in rows]

    def _contact_row(self, where: ColumnElement[bool]) -> Row[Any] | None:
        query = select(s.contacts).where(s.contacts.c.tenant == self.tenant, where)
        if self.writing:
            query = self._lock_clause(query)
        return self.conn.execute(query).first()

    def get_contact(self, contact_id: str) -> Contact | None:
        row = self._contact_row(s.contacts.c.id == contact_id)
        return self._contacts([row])[0] if row else None

    def get_contact_by_external_id(self, external_id: str) -> Contact | None:
        row = self._contact_row(s.contacts.c.external_id == external_id)
        return self._contacts([row])[0] if row else None

    @staticmethod
    def _contact_values(contact: Contact) -> dict[str, Any]:
        values = contact.model_dump(exclude={"workflow_instance_ids"})
        values["phone_digits"] = phone_digits(contact.phone, contact.phone_e164)
        return values

    def insert_contact(self, contact: Contact) -> None:
        pk = _inserted_pk(self.conn.execute(_INSERT_CONTACT, self._contact_values(contact)))
        self._set_tags(s.contact_tags, "contact_pk", pk, contact.tags, contact.created_at, replace=False)

    def update_contact(self, contact: Contact) -> None:
        values = self._contact_values(contact)
        del values["tenant"], values["id"], values["created_at"]
        pk = self.conn.execute(_UPDATE_CONTACT, {**values, "w_tenant": self.tenant, "w_id": contact.id}).scalar_one()
        self._set_tags(s.contact_tags, "contact_pk", pk, contact.tags, contact.created_at, replace=True)

    def delete_contact(self, contact_id: str) -> bool:
        if self._delete_tagged(s.contacts, s.contact_tags, "contact_pk", contact_id) is None:
            return False
        e = s.events.c  # the contact's own events go with it; its instances' events stay with the instances
        self.conn.execute(
            delete(s.events).where(e.tenant == self.tenant, e.contact_id == contact_id, e.instance_id.is_(None))
        )
        return True

    def _tag_filter(self, table: Any, tag_table: Any, fk: str, tags: Sequence[str]) -> list[ColumnElement[bool]]:
        return [
            exists().where(
                tag_table.c.tenant == self.tenant,
                tag_table.c.tag == tag,
                getattr(tag_table.c, fk) == table.c.pk,
            )
            for tag in tags
        ]

    def list_contacts(self, where: ContactFilter, page: PageRequest) -> Page[Contact]:
        c = s.contacts.c
        query = select(s.contacts).where(c.tenant == self.tenant)
        if where.county is not None:
            query = query.where(c.county == where.county)
        if where.organization is not None:
            query = query.where(c.organization == where.organization)
        if where.external_id is not None:
            query = query.where(c.external_id == where.external_id)
        query, order = self._tagged(query, s.contacts, s.contact_tags, "contact_pk", where.tags)
        rows, cursor = self._page(query, s.contacts, page, order)
        return Page(self._contacts(rows), cursor)

    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """Portable fallback: a LIKE scan (backends override it with an index). `query` has 3+ characters."""
        return self._search_like(query, page)

    def _search_like(self, query: str, page: PageRequest) -> Page[Contact]:
        c = s.contacts.c
        pattern = "%" + _escape_like(query.lower()) + "%"
        clauses = [func.lower(c.name).like(pattern, escape="\\"), func.lower(c.email).like(pattern, escape="\\")]
        digits = phone_query_digits(query)
        if digits:
            clauses.append(c.phone_digits.like("%" + digits + "%"))
        query_rows = select(s.contacts).where(c.tenant == self.tenant, or_(*clauses))
        if page.cursor is not None:
            query_rows = query_rows.where(c.pk < self._pk_cursor(page.cursor))
        rows = list(self.conn.execute(query_rows.order_by(c.pk.desc()).limit(page.limit + 1)).all())
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        return Page(self._contacts(rows), encode_cursor(rows[-1].pk) if more else None)

    @staticmethod
    def _pk_cursor(cursor: str) -> int:
        """Search pages newest-stored first, keyed on pk alone (the order a text index yields rows in)."""
        return cursor_int(decode_cursor(cursor, 1)[0])

    # ------------------------------------------------------------------ templates
    @staticmethod
    def _template(row: Row[Any]) -> WorkflowTemplate:
        return WorkflowTemplate.model_validate(
            {
                **row.body,
                "id": row.id,
                "tenant": row.tenant,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        )

    @staticmethod
    def _template_body(template: WorkflowTemplate) -> dict[str, Any]:
        return template.model_dump(mode="json", include=set(_TEMPLATE_BODY_FIELDS))

    def get_template(self, template_id: str) -> WorkflowTemplate | None:
        t = s.templates.c
        row = self.conn.execute(select(s.templates).where(t.tenant == self.tenant, t.id == template_id)).first()
        return self._template(row) if row else None

    def insert_template(self, template: WorkflowTemplate) -> None:
        pk = _inserted_pk(
            self.conn.execute(
                insert(s.templates).values(
                    tenant=self.tenant,
                    id=template.id,
                    version=template.version,
                    body=self._template_body(template),
                    tags=template.tags,
                    created_at=template.created_at,
                    updated_at=template.updated_at,
                )
            )
        )
        self._set_tags(s.template_tags, "template_pk", pk, template.tags, template.created_at, replace=False)

    def update_template(self, template: WorkflowTemplate) -> None:
        t = s.templates.c
        pk = self.conn.execute(
            update(s.templates)
            .where(t.tenant == self.tenant, t.id == template.id)
            .values(
                version=template.version,
                body=self._template_body(template),
                tags=template.tags,
                updated_at=template.updated_at,
            )
            .returning(t.pk)
        ).scalar_one()
        self._set_tags(s.template_tags, "template_pk", pk, template.tags, template.created_at, replace=True)

    def delete_template(self, template_id: str) -> bool:
        if self._delete_tagged(s.templates, s.template_tags, "template_pk", template_id) is None:
            return False
        v = s.template_versions.c
        self.conn.execute(delete(s.template_versions).where(v.tenant == self.tenant, v.template_id == template_id))
        return True

    def list_templates(self, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]:
        query = select(s.templates).where(s.templates.c.tenant == self.tenant)
        query, order = self._tagged(query, s.templates, s.template_tags, "template_pk", [tag] if tag else [])
        rows, cursor = self._page(query, s.templates, page, order)
        return Page([self._template(r) for r in rows], cursor)

    def insert_template_version(self, version: TemplateVersion) -> None:
        self.conn.execute(
            insert(s.template_versions).values(
                tenant=self.tenant,
                template_id=version.template_id,
                version=version.version,
                body=version.template.model_dump(mode="json"),
                created_at=version.created_at,
            )
        )

    def delete_template_version(self, template_id: str, version: str) -> None:
        v = s.template_versions.c
        self.conn.execute(
            delete(s.template_versions).where(
                v.tenant == self.tenant, v.template_id == template_id, v.version == version
            )
        )

    def list_template_versions(self, template_id: str, page: PageRequest) -> Page[TemplateVersion]:
        v = s.template_versions.c
        query = select(s.template_versions).where(v.tenant == self.tenant, v.template_id == template_id)
        rows, cursor = self._page(query, s.template_versions, page)
        return Page(
            [
                TemplateVersion(
                    template_id=r.template_id,
                    version=r.version,
                    template=WorkflowTemplate.model_validate(r.body),
                    created_at=r.created_at,
                )
                for r in rows
            ],
            cursor,
        )

    # ------------------------------------------------------------------ instances
    def put_snapshot(self, snapshot: Snapshot) -> None:
        sn = s.snapshots.c
        if self.conn.execute(select(sn.id).where(sn.tenant == self.tenant, sn.id == snapshot.id)).first():
            return
        values = {
            "id": snapshot.id,
            "tenant": self.tenant,
            "start_node": snapshot.start_node,
            "nodes": snapshot.nodes,
            "created_at": datetime.now(UTC),
        }
        self._insert_unless_there(insert(s.snapshots).values(**values))

    def _insert_unless_there(self, statement: Any) -> bool:
        """Insert in a savepoint; False when a concurrent transaction inserted the same key first."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(statement)
        except IntegrityError:
            return False
        return True

    def _snapshot(self, snapshot_id: str) -> tuple[str, dict[str, Node]]:
        cached = self.snapshots.get((self.tenant, snapshot_id))
        if cached is not None:
            return cached
        row = self.conn.execute(
            select(s.snapshots).where(s.snapshots.c.id == snapshot_id, s.snapshots.c.tenant == self.tenant)
        ).one()
        nodes = _NODE_MAP.validate_python(row.nodes)
        value = (row.start_node, nodes)
        self.snapshots.put((self.tenant, snapshot_id), value)
        return value

    def _instances(self, rows: Sequence[Row[Any]]) -> list[WorkflowInstance]:
        result = []
        for row in rows:
            start_node, nodes = self._snapshot(row.snapshot_id)
            result.append(WorkflowInstance.model_validate({**row._mapping, "start_node": start_node, "nodes": nodes}))
        return result

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        i = s.instances.c
        query = select(s.instances).where(i.tenant == self.tenant, i.id == instance_id)
        if self.writing:
            query = self._lock_clause(query)
        row = self.conn.execute(query).first()
        return self._instances([row])[0] if row else None

    @staticmethod
    def _instance_values(instance: WorkflowInstance) -> dict[str, Any]:
        """The row of an instance. Every save ends a worker's lease: the work it held was for the old revision."""
        values = instance.model_dump(exclude={"nodes", "timeline", "start_node"}, mode="python")
        values["task_action"] = task_action(instance)
        values["worker_id"] = None
        values["worker_lease_until"] = None
        return values

    def insert_instance(self, instance: WorkflowInstance, snapshot_id: str) -> None:
        values = self._instance_values(instance)
        values["snapshot_id"] = snapshot_id
        pk = _inserted_pk(self.conn.execute(_INSERT_INSTANCE, values))
        self._set_tags(s.instance_tags, "instance_pk", pk, instance.tags, instance.created_at, replace=False)

    def update_instance(self, instance: WorkflowInstance) -> None:
        values = self._instance_values(instance)
        for fixed in ("tenant", "id", "contact_id", "template_id", "template_version", "created_at"):
            del values[fixed]
        where = {"w_tenant": self.tenant, "w_id": instance.id, "w_revision": instance.revision - 1}
        row = self.conn.execute(_UPDATE_INSTANCE, {**values, **where}).first()
        if row is None:
            raise RuntimeError(f"instance {instance.id} changed under a write lock (revision {instance.revision})")
        self._set_tags(s.instance_tags, "instance_pk", row.pk, instance.tags, instance.created_at, replace=True)

    def delete_instance(self, instance_id: str) -> bool:
        if self._delete_tagged(s.instances, s.instance_tags, "instance_pk", instance_id) is None:
            return False
        e = s.events.c
        self.conn.execute(delete(s.events).where(e.tenant == self.tenant, e.instance_id == instance_id))
        return True

    def list_instances(self, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]:
        i = s.instances.c
        query = select(s.instances).where(i.tenant == self.tenant)
        for column, value in (
            (i.contact_id, where.contact_id),
            (i.template_id, where.template_id),
            (i.status, where.status),
            (i.current_node, where.current_node),
            (i.waiting_for, where.waiting_for),
        ):
            if value is not None:
                query = query.where(column == value)
        query, order = self._tagged(query, s.instances, s.instance_tags, "instance_pk", where.tags)
        rows, cursor = self._page(query, s.instances, page, order)
        return Page(self._instances(rows), cursor)

    def unfinished_instances_of_contact(self, contact_id: str) -> list[WorkflowInstance]:
        i = s.instances.c
        query = select(s.instances).where(
            i.tenant == self.tenant,
            i.contact_id == contact_id,
            i.status.not_in([status.value for status in TERMINAL]),
        )
        if self.writing:
            query = self._lock_clause(query)
        return self._instances(self.conn.execute(query.order_by(i.created_at, i.pk)).all())

    # ------------------------------------------------------------------ the worker's due work
    def claim_due(self, now: datetime, worker_id: str, lease_until: datetime, limit: int) -> list[DueWork]:
        i = s.instances.c
        free = or_(i.worker_lease_until.is_(None), i.worker_lease_until < now)
        pick = select(i.pk).where(s.MOVABLE_SQL, i.wake_at <= now, free).order_by(i.wake_at).limit(limit)
        pks = list(self.conn.execute(self._skip_locked(pick)).scalars())
        if not pks:
            return []
        rows = self.conn.execute(
            update(s.instances)
            .where(i.pk.in_(pks))
            .values(worker_id=worker_id, worker_lease_until=lease_until)
            .returning(i.tenant, i.id, i.revision)
        ).all()
        return [DueWork(row.tenant, row.id, row.revision) for row in rows]

    def next_wake(self, now: datetime) -> datetime | None:
        i = s.instances.c
        free = or_(i.worker_lease_until.is_(None), i.worker_lease_until < now)
        earliest: datetime | None = self.conn.execute(
            select(i.wake_at).where(s.MOVABLE_SQL, i.wake_at.is_not(None), free).order_by(i.wake_at).limit(1)
        ).scalar_one_or_none()
        leased: datetime | None = self.conn.execute(
            select(func.min(i.worker_lease_until)).where(s.MOVABLE_SQL, i.wake_at <= now, i.worker_lease_until >= now)
        ).scalar_one()
        found = [t for t in (earliest, leased) if t is not None]
        return min(found) if found else None

    def release_work(self, instance_id: str, worker_id: str) -> None:
        i = s.instances.c
        self.conn.execute(
            update(s.instances)
            .where(i.tenant == self.tenant, i.id == instance_id, i.worker_id == worker_id)
            .values(worker_id=None, worker_lease_until=None)
        )

    # ------------------------------------------------------------------ the work queue
    def _tasks(self, where: TaskFilter, now: datetime) -> Select[Any]:
        i = s.instances.c
        query = select(s.instances).where(
            i.tenant == self.tenant, i.task_since.is_not(None), i.status.in_([m.value for m in MOVABLE])
        )
        if where.action is not None:
            query = query.where(i.task_action == where.action)
        if where.template_id is not None:
            query = query.where(i.template_id == where.template_id)
        if where.held_by is not None:
            query = query.where(i.held_by == where.held_by, i.lease_expires_at > now)
        if where.county is not None or where.tag is not None:
            c = s.contacts.c
            query = query.join(s.contacts, and_(c.tenant == i.tenant, c.id == i.contact_id))
            if where.county is not None:
                query = query.where(c.county == where.county)
            if where.tag is not None:
                query = query.where(*self._tag_filter(s.contacts, s.contact_tags, "contact_pk", [where.tag]))
        return query

    def list_tasks(self, where: TaskFilter, now: datetime, page: PageRequest) -> Page[WorkflowInstance]:
        i = s.instances.c
        query = self._tasks(where, now)
        if page.cursor is not None:
            when, last = decode_cursor(page.cursor, 2)
            try:
                when_dt = datetime.fromisoformat(when)
            except (TypeError, ValueError):
                raise InvalidInput(BAD_CURSOR) from None
            last_pk = cursor_int(last)
            query = query.where(or_(i.task_since > when_dt, and_(i.task_since == when_dt, i.pk > last_pk)))
        rows = list(self.conn.execute(query.order_by(i.task_since, i.pk).limit(page.limit + 1)).all())
        cursor = None
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            cursor = encode_cursor(rows[-1].task_since.isoformat(), rows[-1].pk)
        return Page(self._instances(rows), cursor)

    def next_open_task(self, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        i = s.instances.c
        query = self._tasks(where, now).where(or_(i.held_by.is_(None), i.lease_expires_at <= now))
        query = self._skip_locked(query.order_by(i.task_since, i.pk).limit(1))
        row = self.conn.execute(query).first()
        return self._instances([row])[0] if row else None

    def count_instances_by_status(self) -> dict[str, int]:
        i = s.instances.c
        rows = self.conn.execute(select(i.status, func.count()).group_by(i.status)).all()
        return {str(status): int(count) for status, count in rows}

    # ------------------------------------------------------------------ events
    def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = [{**e.model_dump(mode="python"), "type": e.type.value, "tenant": self.tenant} for e in events]
        self.conn.execute(insert(s.events), rows)

    def _events(self, where: ColumnElement[bool], page: PageRequest, newest_first: bool) -> Page[Event]:
        e = s.events.c
        query = select(s.events).where(e.tenant == self.tenant, where)
        if page.cursor is not None:
            last = cursor_int(decode_cursor(page.cursor, 1)[0])
            query = query.where(e.seq < last if newest_first else e.seq > last)
        query = query.order_by(e.seq.desc() if newest_first else e.seq).limit(page.limit + 1)
        rows = list(self.conn.execute(query).all())
        cursor = None
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            cursor = encode_cursor(rows[-1].seq)
        return Page(
            [
                Event(
                    id=r.id,
                    type=r.type,
                    timestamp=r.timestamp,
                    node_id=r.node_id,
                    actor=r.actor,
                    data=r.data,
                    message=r.message,
                    instance_id=r.instance_id,
                    contact_id=r.contact_id,
                    template_id=r.template_id,
                )
                for r in rows
            ],
            cursor,
        )

    def instance_events(self, instance_id: str, page: PageRequest, newest_first: bool = False) -> Page[Event]:
        return self._events(s.events.c.instance_id == instance_id, page, newest_first)

    def contact_events(self, contact_id: str, page: PageRequest) -> Page[Event]:
        return self._events(s.events.c.contact_id == contact_id, page, newest_first=True)

    # ------------------------------------------------------------------ idempotency
    def _idem_where(self, route: str, key: str) -> ColumnElement[bool]:
        k = s.idempotency_keys.c
        return and_(k.tenant == self.tenant, k.route == route, k.key == key)

    def get_idempotency(self, route: str, key: str, since: datetime) -> IdempotentResponse | None:
        k = s.idempotency_keys.c
        row = self.conn.execute(
            select(s.idempotency_keys).where(self._idem_where(route, key), k.created_at >= since)
        ).first()
        if row is None:
            return None
        return IdempotentResponse(row.token_id, row.request_hash, row.done, row.status_code, row.response)

    def reserve_idempotency(self, route: str, key: str, token_id: str, request_hash: str, now: datetime) -> bool:
        k = s.idempotency_keys.c
        # An entry older than 24 h is forgotten: the key may be used again.
        self.conn.execute(
            delete(s.idempotency_keys).where(self._idem_where(route, key), k.created_at < now - timedelta(hours=24))
        )
        if self.conn.execute(select(k.key).where(self._idem_where(route, key))).first():
            return False
        return self._insert_unless_there(
            insert(s.idempotency_keys).values(
                tenant=self.tenant,
                route=route,
                key=key,
                token_id=token_id,
                request_hash=request_hash,
                done=False,
                created_at=now,
            )
        )

    def finish_idempotency(self, route: str, key: str, status_code: int, body: str) -> None:
        self.conn.execute(
            update(s.idempotency_keys)
            .where(self._idem_where(route, key))
            .values(done=True, status_code=status_code, response=body)
        )

    def release_idempotency(self, route: str, key: str) -> None:
        self.conn.execute(delete(s.idempotency_keys).where(self._idem_where(route, key)))

    def purge_idempotency(self, before: datetime) -> int:
        done = self.conn.execute(delete(s.idempotency_keys).where(s.idempotency_keys.c.created_at < before))
        return int(done.rowcount)


# Statements built once: their parameters come at execute time, so SQLAlchemy compiles each only once.
_INSERT_CONTACT = insert(s.contacts)
_UPDATE_CONTACT = (
    update(s.contacts)
    .where(s.contacts.c.tenant == bindparam("w_tenant"), s.contacts.c.id == bindparam("w_id"))
    .returning(s.contacts.c.pk)
)
_INSERT_INSTANCE = insert(s.instances)
_UPDATE_INSTANCE = (
    update(s.instances)
    .where(
        s.instances.c.tenant == bindparam("w_tenant"),
        s.instances.c.id == bindparam("w_id"),
        s.instances.c.revision == bindparam("w_revision"),
    )
    .returning(s.instances.c.pk)
)


def _inserted_pk(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def task_action(instance: WorkflowInstance) -> str | None:
    """The action of the node a task waits at (for the work queue's `action` filter)."""
    if instance.task_since is None or instance.current_node is None:
        return None
    action = getattr(instance.nodes.get(instance.current_node), "action", None)
    return action if isinstance(action, str) else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
