"""`Tx` over SQLAlchemy Core: one tenant's transaction, shared by the SQLite and PostgreSQL stores.

Every statement filters on `self.tenant`. Lists use keyset pagination on (created_at, pk), newest first, so a
page costs the same at row 10 and at row 1,000,000. The backend modules add what differs: connections, locking
and contact search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, String, Table, and_, any_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement, Select

from ...models.access import Token
from ...models.contact_rules import ContactHours, TenantSettings
from ...models.contacts import Contact
from ...models.events import Event
from ...models.instances import MOVABLE, TERMINAL, WorkflowInstance
from ...models.jobs import JobRecord
from ...models.templates import Node, TemplateVersion, WorkflowTemplate, hooks_of
from .. import schema as s
from ..base import IdempotencyRecord, Page, PageRequest, Snapshot, SnapshotCache, TokenRecord, Tx
from ..filters import ContactFilter, InstanceFilter, TaskFilter
from ..jobs import FIXED as JOB_FIXED
from ..paging import cut_page, time_cursor
from ..search_sample import Samples
from ..tallies import Count, Tally, place_of
from . import rows, search
from .batches import BatchRows
from .deliveries import SubscriptionRows
from .hooks import HookRows
from .outbox import OutboxRows
from .people import PeopleRows
from .tags import CONTACTS, INSTANCES, TEMPLATES, Tagged, TagRows
from .tally_rows import read_tallies


class RowLocks:
    """How a backend locks the rows a write reads. SQLite's one writer already holds the database: no-ops."""

    def once(self, query: Select[Any]) -> Select[Any]:
        """`for_update` of a statement built once at import, itself made once: SQLAlchemy keeps a statement's
        cache key on the statement, so reusing the object skips building and hashing it on every step."""
        made: dict[int, Select[Any]] = self.__dict__.setdefault("_once", {})
        found = made.get(id(query))
        if found is None:
            found = made[id(query)] = self.for_update(query)
        return found

    def for_update(self, query: Select[Any]) -> Select[Any]:
        """Lock the rows read, for a read-modify-write."""
        return query

    def skip_locked(self, query: Select[Any], of: Table = s.instances) -> Select[Any]:
        """Lock the rows of `of` picked, passing over rows another transaction holds."""
        return query


# The reads of every step, built once (see RowLocks.once).
_I, _C, _T = s.instances.c, s.contacts.c, s.templates.c
_TENANT: Any = bindparam("tenant")
GET_INSTANCE = select(s.instances).where(_I.tenant == bindparam("tenant"), _I.id == bindparam("id"))
SAVE_INSTANCES = update(s.instances).where(
    _I.tenant == bindparam("w_tenant"), _I.id == bindparam("w_id"), _I.revision == bindparam("w_revision")
)
GET_INSTANCES = select(s.instances).where(_I.tenant == bindparam("tenant"), _I.id.in_(bindparam("ids", expanding=True)))
# On PostgreSQL the ids as one array (see `rows.among`): the same text for any number of them, whose conversion the
# driver caches (a hundred placeholders it parses again for every batch of timers).
GET_INSTANCES_ANY = select(s.instances).where(
    _I.tenant == bindparam("tenant"), _I.id == any_(bindparam("ids", type_=ARRAY(String)))
)
INSTANCE_PLACE = select(_I.status, _I.current_node).where(_I.tenant == bindparam("tenant"), _I.id == bindparam("id"))
READ_CONTACT = select(s.contacts).where(_C.tenant == bindparam("tenant"), _C.id == bindparam("id"))
TENANT_SETTINGS = select(s.tenants.c.settings).where(s.tenants.c.id == bindparam("tenant"))
# Only the template's `contact_hours`, not its whole body (the graph): the JSON path on both databases.
TEMPLATE_HOURS = select(_T.body["contact_hours"]).where(_T.tenant == bindparam("tenant"), _T.id == bindparam("id"))
# Both sources of a step's contact rules in one statement: the tenant's settings and its template's hours.
RULES_SOURCES = select(s.tenants.c.settings, TEMPLATE_HOURS.scalar_subquery()).where(s.tenants.c.id == _TENANT)


def insert_unless_there(conn: Connection, statement: Any) -> bool:
    """Insert in a savepoint; False when a concurrent transaction inserted the same key first."""
    try:
        with conn.begin_nested():
            conn.execute(statement)
    except IntegrityError:
        return False
    return True


def save_job(conn: Connection, tenant: str, job: JobRecord) -> bool:
    """Save every field of `tenant`'s stored job but the fixed ones, if its stored revision is the one before
    `job`'s; false (nothing saved) otherwise."""
    values = rows.job_values(job)
    for fixed in JOB_FIXED:
        del values[fixed]
    where = {"w_tenant": tenant, "w_id": job.id, "w_revision": job.revision - 1}
    return bool(conn.execute(rows.UPDATE_JOB, {**values, **where}).rowcount == 1)


def _equal(query: Select[Any], pairs: Iterable[tuple[Any, Any]]) -> Select[Any]:
    """`query` narrowed to rows whose column equals the value, for each (column, value) whose value is given."""
    for column, value in pairs:
        if value is not None:
            query = query.where(column == value)
    return query


def _created_key(row: Row[Any]) -> tuple[str, int]:
    return row.created_at.isoformat(), row.pk


class SqlTx(BatchRows, HookRows, OutboxRows, PeopleRows, SubscriptionRows, Tx):
    """A transaction on one SQLAlchemy connection, scoped to a tenant."""

    def __init__(
        self,
        conn: Connection,
        tenant: str,
        snapshots: SnapshotCache,
        locks: RowLocks,
        *,
        writing: bool,
        samples: Samples,
    ) -> None:
        self.conn = conn
        self.tenant = tenant
        self.snapshots = snapshots
        self.locks = locks
        self.writing = writing
        self.samples = samples  # what the tenant's newest contacts say about a search (the store's)
        self.tags = TagRows(conn, tenant)
        self.tally = Tally()  # the campaign-number changes of this transaction, written just before it commits
        self._places: dict[str, tuple[str, str | None]] = {}  # (status, node) of instances read or written here
        self._tags: dict[str, list[str]] = {}  # the tags of instances read or written here, as their rows hold them
        self.pending_events: list[Event] = []  # written, numbered, just before the commit (outbox.py)

    # ------------------------------------------------------------------ helpers
    def _page(
        self, query: Select[Any], table: Any, page: PageRequest, order: tuple[Any, Any] | None = None
    ) -> tuple[list[Row[Any]], str | None]:
        """Newest first on (created_at, pk), or on `order`: the same two values taken from a tag row."""
        created, pk = order or (table.c.created_at, table.c.pk)
        if page.cursor is not None:
            when, last = time_cursor(page.cursor)
            query = query.where(rows.beyond((created, pk), (when, last)))
        found = self.conn.execute(query.order_by(created.desc(), pk.desc()).limit(page.limit + 1)).all()
        return cut_page(found, page.limit, _created_key)

    def _locked(self, query: Select[Any]) -> Select[Any]:
        return self.locks.for_update(query) if self.writing else query

    def _list(self, query: Select[Any], kind: Tagged, tags: Sequence[str], page: PageRequest) -> Any:
        query, order = self.tags.having_all(query, kind, tags)
        return self._page(query, kind.table, page, order)

    def _delete_with(self, kind: Tagged, record_id: str, rows_of: Table, *where: ColumnElement[bool]) -> bool:
        """Delete a record, its tags, and the tenant's rows of `rows_of` that `where` picks (what belongs to it)."""
        if not self.tags.delete_record(kind, record_id):
            return False
        self.conn.execute(delete(rows_of).where(rows_of.c.tenant == self.tenant, *where))
        return True

    # ------------------------------------------------------------------ tokens
    def insert_token(self, record: TokenRecord) -> None:
        self.conn.execute(insert(s.tokens).values(**rows.token_values(record.token, record.secret_hash)))

    def get_token_record(self, token_id: str) -> TokenRecord | None:
        t = s.tokens.c
        row = self.conn.execute(select(s.tokens).where(t.tenant == self.tenant, t.id == token_id)).first()
        return TokenRecord(token=rows.token(row), secret_hash=row.secret_hash) if row else None

    def list_tokens(self, page: PageRequest) -> Page[Token]:
        found, cursor = self._page(select(s.tokens).where(s.tokens.c.tenant == self.tenant), s.tokens, page)
        return Page([rows.token(r) for r in found], cursor)

    def delete_token(self, token_id: str) -> bool:
        t = s.tokens.c
        return bool(self.conn.execute(delete(s.tokens).where(t.tenant == self.tenant, t.id == token_id)).rowcount)

    # ------------------------------------------------------------------ contacts
    def _instance_ids_by_contact(self, contact_ids: Sequence[str]) -> dict[str, list[str]]:
        if not contact_ids:
            return {}
        i = s.instances.c
        # Sorted here, not by the database: an ORDER BY on the creation time leads SQLite's planner (without
        # statistics) to walk every instance of the tenant in that order instead of looking up these contacts.
        found_rows = self.conn.execute(
            select(i.contact_id, i.id, i.created_at, i.pk).where(
                i.tenant == self.tenant, rows.among(self.conn, i.contact_id, contact_ids)
            )
        ).all()
        found: dict[str, list[str]] = {cid: [] for cid in contact_ids}
        for row in sorted(found_rows, key=lambda r: (r.created_at, r.pk)):
            found[row.contact_id].append(row.id)
        return found

    def _contacts(self, found: Sequence[Row[Any]]) -> list[Contact]:
        links = self._instance_ids_by_contact([r.id for r in found])
        return [Contact.model_validate({**r._mapping, "workflow_instance_ids": links.get(r.id, [])}) for r in found]

    def _contact(self, where: ColumnElement[bool]) -> Contact | None:
        query = select(s.contacts).where(s.contacts.c.tenant == self.tenant, where)
        first = self.conn.execute(self._locked(query)).first()
        return self._contacts([first])[0] if first else None

    def get_contact(self, contact_id: str) -> Contact | None:
        return self._contact(s.contacts.c.id == contact_id)

    def get_settings(self) -> TenantSettings:
        stored = self.conn.execute(TENANT_SETTINGS, {"tenant": self.tenant}).scalar_one_or_none()
        return TenantSettings.model_validate(stored or {})

    def put_settings(self, settings: TenantSettings) -> None:
        t = s.tenants.c
        values = {"settings": settings.model_dump(mode="json")}
        self.conn.execute(update(s.tenants).where(t.id == self.tenant).values(**values))

    def record_send(self, contact_id: str, channel: str, at: datetime) -> None:
        values = {"tenant": self.tenant, "contact_id": contact_id, "channel": channel, "at": at}
        self.conn.execute(insert(s.sends).values(**values))

    def sends_since(self, contact_id: str, channel: str, since: datetime) -> list[datetime]:
        d = s.sends.c
        query = select(d.at).where(d.tenant == self.tenant, d.contact_id == contact_id, d.channel == channel)
        return list(self.conn.execute(query.where(d.at > since).order_by(d.at)).scalars())

    def template_contact_hours(self, template_id: str) -> ContactHours | None:
        hours = self.conn.execute(TEMPLATE_HOURS, {"tenant": self.tenant, "id": template_id}).scalar()
        return ContactHours.model_validate(hours) if hours else None

    def rules_sources(self, template_id: str) -> tuple[TenantSettings, ContactHours | None]:
        row = self.conn.execute(RULES_SOURCES, {"tenant": self.tenant, "id": template_id}).first()
        settings, hours = (row[0], row[1]) if row is not None else (None, None)
        return TenantSettings.model_validate(settings or {}), ContactHours.model_validate(hours) if hours else None

    def read_contact(self, contact_id: str) -> Contact | None:
        row = self.conn.execute(READ_CONTACT, {"tenant": self.tenant, "id": contact_id}).first()
        return Contact.model_validate(row._mapping) if row else None

    def get_contact_by_external_id(self, external_id: str) -> Contact | None:
        return self._contact(s.contacts.c.external_id == external_id)

    def insert_contact(self, contact: Contact) -> None:
        pk = rows.inserted_pk(self.conn.execute(rows.INSERT_CONTACT, rows.contact_values(contact)))
        self.tags.put(CONTACTS, pk, contact.tags, contact.created_at, replace=False)

    def update_contact(self, contact: Contact) -> None:
        values = rows.contact_values(contact)
        del values["tenant"], values["id"], values["created_at"]
        where = {"w_tenant": self.tenant, "w_id": contact.id}
        pk = self.conn.execute(rows.UPDATE_CONTACT, {**values, **where}).scalar_one()
        self.tags.put(CONTACTS, pk, contact.tags, contact.created_at, replace=True)

    def delete_contact(self, contact_id: str) -> bool:
        e = s.events.c  # the contact's own events go with it; its instances' events stay with the instances
        self.pending_events = [k for k in self.pending_events if k.instance_id or k.contact_id != contact_id]
        return self._delete_with(CONTACTS, contact_id, s.events, e.contact_id == contact_id, e.instance_id.is_(None))

    def _contacts_where(self, query: Select[Any], where: ContactFilter) -> tuple[Select[Any], Any]:
        """`query` over contacts narrowed to the tenant's that `where` picks; also the pair to page along."""
        c = s.contacts.c
        wanted = ((c.county, where.county), (c.organization, where.organization), (c.external_id, where.external_id))
        narrowed = _equal(select(c.pk).where(c.tenant == self.tenant), wanted)
        rival = narrowed if any(value is not None for _, value in wanted) else None
        return self.tags.having_all(_equal(query.where(c.tenant == self.tenant), wanted), CONTACTS, where.tags, rival)

    def list_contacts(self, where: ContactFilter, page: PageRequest) -> Page[Contact]:
        query, order = self._contacts_where(select(s.contacts), where)
        found, cursor = self._page(query, s.contacts, page, order)
        return Page(self._contacts(found), cursor)

    def count_contacts(self, where: ContactFilter) -> int:
        query, _ = self._contacts_where(select(func.count()).select_from(s.contacts), where)
        return int(self.conn.execute(query).scalar_one())

    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """Portable fallback: a LIKE scan (backends override it with an index). `query` has 3+ characters."""
        return self._search_like(query, page)

    def _search_like(self, query: str, page: PageRequest) -> Page[Contact]:
        """The tenant's contacts newest first, each checked for the text: a page at once when it is common."""
        found, cursor = search.walk(self.conn, search.search_where(self.tenant, query, page), page)
        return Page(self._contacts(found), cursor)

    def search_names(self, prefix: str, page: PageRequest) -> Page[Contact]:
        found, cursor = search.names(self.conn, self.tenant, prefix, page)
        return Page(self._contacts(found), cursor)

    # ------------------------------------------------------------------ templates
    def get_template(self, template_id: str) -> WorkflowTemplate | None:
        t = s.templates.c
        row = self.conn.execute(select(s.templates).where(t.tenant == self.tenant, t.id == template_id)).first()
        return rows.template(row) if row else None

    def insert_template(self, template: WorkflowTemplate) -> None:
        values = {"tenant": self.tenant, "id": template.id, "created_at": template.created_at}
        statement = insert(s.templates).values(**values, **self._template_values(template))
        pk = rows.inserted_pk(self.conn.execute(statement))
        self.tags.put(TEMPLATES, pk, template.tags, template.created_at, replace=False)

    @staticmethod
    def _template_values(template: WorkflowTemplate) -> dict[str, Any]:
        body = rows.template_body(template)
        values = {"version": template.version, "body": body, "tags": template.tags, "updated_at": template.updated_at}
        values["hooks"] = hooks_of(template.triggers, template.goals)  # what contact changes read (hooks.py)
        return values

    def update_template(self, template: WorkflowTemplate) -> None:
        t = s.templates.c
        pk = self.conn.execute(
            update(s.templates)
            .where(t.tenant == self.tenant, t.id == template.id)
            .values(**self._template_values(template))
            .returning(t.pk)
        ).scalar_one()
        self.tags.put(TEMPLATES, pk, template.tags, template.created_at, replace=True)

    def delete_template(self, template_id: str) -> bool:
        versions = s.template_versions
        return self._delete_with(TEMPLATES, template_id, versions, versions.c.template_id == template_id)

    def list_templates(self, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]:
        query = select(s.templates).where(s.templates.c.tenant == self.tenant)
        found, cursor = self._list(query, TEMPLATES, [tag] if tag else [], page)
        return Page([rows.template(r) for r in found], cursor)

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
        found, cursor = self._page(query, s.template_versions, page)
        return Page([rows.template_version(r) for r in found], cursor)

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
        insert_unless_there(self.conn, insert(s.snapshots).values(**values))

    def _snapshot(self, snapshot_id: str) -> tuple[str, dict[str, Node]]:
        def read() -> tuple[str, Any]:
            sn = s.snapshots.c
            row = self.conn.execute(select(s.snapshots).where(sn.id == snapshot_id, sn.tenant == self.tenant)).one()
            return row.start_node, row.nodes

        return self.snapshots.load(self.tenant, snapshot_id, read)

    def _instances(self, found: Sequence[Row[Any]]) -> list[WorkflowInstance]:
        result = []
        for row in found:
            if self.writing:
                self._places[row.id] = (row.status, row.current_node)
                self._tags[row.id] = row.tags
            start_node, nodes = self._snapshot(row.snapshot_id)
            result.append(WorkflowInstance.model_validate({**row._mapping, "start_node": start_node, "nodes": nodes}))
        return result

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        query = self.locks.once(GET_INSTANCE) if self.writing else GET_INSTANCE
        first = self.conn.execute(query, {"tenant": self.tenant, "id": instance_id}).first()
        return self._instances([first])[0] if first else None

    def get_instances(self, instance_ids: Sequence[str]) -> list[WorkflowInstance]:
        built = GET_INSTANCES_ANY if self.conn.dialect.name == "postgresql" else GET_INSTANCES
        query = self.locks.once(built) if self.writing else built
        return self._instances(self.conn.execute(query, {"tenant": self.tenant, "ids": list(instance_ids)}).all())

    def insert_instance(self, instance: WorkflowInstance, snapshot_id: str) -> None:
        values = rows.instance_values(instance)
        values["snapshot_id"] = snapshot_id
        pk = rows.inserted_pk(self.conn.execute(rows.INSERT_INSTANCE, values))
        self.tags.put(INSTANCES, pk, instance.tags, instance.created_at, replace=False)
        self._tags[instance.id] = list(instance.tags)
        self._places[instance.id] = place_of(instance)
        self.tally.moved(instance.template_id, None, self._places[instance.id])

    def insert_instances(self, instances: Sequence[WorkflowInstance], snapshot_id: str) -> None:
        if not instances:
            return
        values = [{**rows.instance_values(instance), "snapshot_id": snapshot_id} for instance in instances]
        self.tags.insert_records(INSTANCES, values, instances)
        for instance in instances:
            self._places[instance.id] = place_of(instance)
            self.tally.moved(instance.template_id, None, self._places[instance.id])

    def update_instance(self, instance: WorkflowInstance) -> None:
        before = self._places.get(instance.id) or self._place(instance.id)
        values = rows.instance_values(instance)
        for fixed in ("tenant", "id", "contact_id", "template_id", "template_version", "created_at"):
            del values[fixed]
        where = {"w_tenant": self.tenant, "w_id": instance.id, "w_revision": instance.revision - 1}
        row = self.conn.execute(rows.UPDATE_INSTANCE, {**values, **where}).first()
        if row is None:
            raise RuntimeError(f"instance {instance.id} changed under a write lock (revision {instance.revision})")
        if self._tags.get(instance.id) != instance.tags:  # most steps keep the tags: no tag rows to look at
            self.tags.put(INSTANCES, row.pk, instance.tags, instance.created_at, replace=True)
            self._tags[instance.id] = list(instance.tags)
        self._places[instance.id] = place_of(instance)
        self.tally.moved(instance.template_id, before, self._places[instance.id])

    def update_instances(self, instances: Sequence[WorkflowInstance]) -> None:
        """Those read here whose tags stay in one executemany (no RETURNING: the revision check is its row count)."""
        kept = [one for one in instances if one.id in self._places and self._tags.get(one.id) == one.tags]
        ids = {one.id for one in kept}
        for other in instances:
            if other.id not in ids:
                self.update_instance(other)
        if not kept:
            return
        params = [{**rows.instance_values(one), "w_tenant": self.tenant, "w_id": one.id} for one in kept]
        for one, values in zip(kept, params, strict=True):
            values["w_revision"] = one.revision - 1
            for fixed in ("tenant", "id", "contact_id", "template_id", "template_version", "created_at"):
                del values[fixed]
        if rows.execute_many(self.conn, SAVE_INSTANCES, params) != len(kept):
            raise RuntimeError("an instance changed under a write lock")
        for one in kept:
            before, self._places[one.id] = self._places[one.id], place_of(one)
            self.tally.moved(one.template_id, before, self._places[one.id])

    def rebase_instance(self, instance_id: str, snapshot_id: str, template_version: str) -> None:
        i = s.instances.c
        values = {"snapshot_id": snapshot_id, "template_version": template_version}
        self.conn.execute(update(s.instances).where(i.tenant == self.tenant, i.id == instance_id).values(**values))

    def _place(self, instance_id: str) -> tuple[str, str | None] | None:
        row = self.conn.execute(INSTANCE_PLACE, {"tenant": self.tenant, "id": instance_id}).first()
        return (row.status, row.current_node) if row else None

    def delete_instance(self, instance_id: str) -> bool:
        i = s.instances.c
        query = select(i.template_id, i.status, i.current_node).where(i.tenant == self.tenant, i.id == instance_id)
        found = self.conn.execute(query).first()
        if not self._delete_with(INSTANCES, instance_id, s.events, s.events.c.instance_id == instance_id):
            return False
        self.pending_events = [k for k in self.pending_events if k.instance_id != instance_id]
        if found is not None:
            self.tally.moved(found.template_id, (found.status, found.current_node), None)
        self._places.pop(instance_id, None)
        self._tags.pop(instance_id, None)
        return True

    def list_instances(self, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]:
        i = s.instances.c
        wanted = (
            (i.contact_id, where.contact_id),
            (i.template_id, where.template_id),
            (i.status, where.status),
            (i.current_node, where.current_node),
            (i.waiting_for, where.waiting_for),
        )
        query = _equal(select(s.instances).where(i.tenant == self.tenant), wanted)
        found, cursor = self._list(query, INSTANCES, where.tags, page)
        return Page(self._instances(found), cursor)

    def unfinished_instances_of_contact(self, contact_id: str) -> list[WorkflowInstance]:
        i = s.instances.c
        query = select(s.instances).where(
            i.tenant == self.tenant,
            i.contact_id == contact_id,
            i.status.not_in([status.value for status in TERMINAL]),
        )
        return self._instances(self.conn.execute(self._locked(query).order_by(i.created_at, i.pk)).all())

    def release_work(self, instance_id: str, worker_id: str) -> None:
        i = s.instances.c
        self.conn.execute(
            update(s.instances)
            .where(i.tenant == self.tenant, i.id == instance_id, i.worker_id == worker_id)
            .values(worker_id=None, worker_lease_until=None)
        )

    def enrolled_contacts(self, template_id: str, contact_ids: Sequence[str]) -> set[str]:
        if not contact_ids:
            return set()
        i = s.instances.c  # along ix_instances_enrolled, whose condition is repeated word for word
        query = select(i.contact_id).where(
            i.tenant == self.tenant,
            i.template_id == template_id,
            rows.among(self.conn, i.contact_id, contact_ids),
            s.ENROLLED_SQL,
        )
        return set(self.conn.execute(query.distinct()).scalars())

    # ------------------------------------------------------------------ jobs
    def insert_job(self, job: JobRecord) -> None:
        self.conn.execute(insert(s.jobs), {**rows.job_values(job), "tenant": self.tenant})

    def get_job(self, job_id: str) -> JobRecord | None:
        j = s.jobs.c
        row = self.conn.execute(self._locked(select(s.jobs).where(j.tenant == self.tenant, j.id == job_id))).first()
        return rows.job(row) if row else None

    def update_job(self, job: JobRecord) -> bool:
        return save_job(self.conn, self.tenant, job)

    def list_jobs(self, page: PageRequest) -> Page[JobRecord]:
        found, cursor = self._page(select(s.jobs).where(s.jobs.c.tenant == self.tenant), s.jobs, page)
        return Page([rows.job(r) for r in found], cursor)

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
                query = query.where(*self.tags.exist(CONTACTS, [where.tag]))
        return query

    def list_tasks(self, where: TaskFilter, now: datetime, page: PageRequest) -> Page[WorkflowInstance]:
        i = s.instances.c
        query = self._tasks(where, now)
        if page.cursor is not None:
            when, last = time_cursor(page.cursor)
            query = query.where(rows.beyond((i.task_since, i.pk), (when, last), descending=False))
        found = self.conn.execute(query.order_by(i.task_since, i.pk).limit(page.limit + 1)).all()
        chosen, cursor = cut_page(found, page.limit, lambda row: (row.task_since.isoformat(), row.pk))
        return Page(self._instances(chosen), cursor)

    def next_open_task(self, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        i = s.instances.c
        query = self._tasks(where, now).where(i.task_since <= now, or_(i.held_by.is_(None), i.lease_expires_at <= now))
        row = self.conn.execute(self.locks.skip_locked(query.order_by(i.task_since, i.pk).limit(1))).first()
        return self._instances([row])[0] if row else None

    # ------------------------------------------------------------------ campaign numbers
    def workflow_counts(self, template_id: str, hours: tuple[int, int] | None) -> list[Count]:
        return read_tallies(self.conn, self.tenant, template_id, hours)

    # ------------------------------------------------------------------ idempotency keys
    def _key(self, route: str, key: str) -> ColumnElement[bool]:
        k = s.idempotency_keys.c
        return and_(k.tenant == self.tenant, k.route == route, k.key == key)

    def get_idempotency(self, route: str, key: str) -> IdempotencyRecord | None:
        row = self.conn.execute(select(s.idempotency_keys).where(self._key(route, key))).first()
        if row is None:
            return None
        return IdempotencyRecord(
            row.route, row.key, row.token_id, row.request_hash, row.created_at, row.done, row.status_code, row.response
        )

    def insert_idempotency(self, record: IdempotencyRecord) -> bool:
        values = asdict(record)
        values["response"] = values.pop("body")
        return insert_unless_there(self.conn, insert(s.idempotency_keys).values(tenant=self.tenant, **values))

    def finish_idempotency(self, route: str, key: str, status_code: int, body: str) -> None:
        done = {"done": True, "status_code": status_code, "response": body}
        self.conn.execute(update(s.idempotency_keys).where(self._key(route, key)).values(**done))

    def delete_idempotency(self, route: str, key: str) -> None:
        self.conn.execute(delete(s.idempotency_keys).where(self._key(route, key)))
