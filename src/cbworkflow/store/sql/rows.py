"""Rows and models: how each record is written to its table and read back, and the statements built once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, Dialect, Row, String, any_, bindparam, insert, literal, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement

from ...models.access import Role, Tenant, Token
from ...models.contacts import Contact
from ...models.events import Event
from ...models.instances import TERMINAL, WorkflowInstance, task_action
from ...models.jobs import JobRecord
from ...models.templates import TemplateVersion, WorkflowTemplate
from ...models.users import SessionRecord, User, UserRecord, email_key
from .. import schema as s
from ..phones import name_key, phone_digits

_TEMPLATE_BODY_FIELDS = {"name", "description", "version", "start_node", "nodes", "triggers", "goals", "tags"}
_TEMPLATE_BODY_FIELDS |= {"metadata", "contact_hours"}


def tenant(row: Row[Any]) -> Tenant:
    return Tenant(id=row.id, name=row.name, created_at=row.created_at)


def token(row: Row[Any]) -> Token:
    return Token(id=row.id, tenant=row.tenant, role=Role(row.role), name=row.name, created_at=row.created_at)


def token_values(record_token: Token, secret_hash: str) -> dict[str, Any]:
    return {
        "tenant": record_token.tenant,
        "id": record_token.id,
        "role": record_token.role.value,
        "name": record_token.name,
        "secret_hash": secret_hash,
        "created_at": record_token.created_at,
    }


def user_values(tenant_id: str, record: UserRecord) -> dict[str, Any]:
    """The row of a person of `tenant_id`: the user's fields, the key their address is matched by, the hashes."""
    values = record.user.model_dump(mode="python")
    values["tenant"] = tenant_id
    values["role"], values["status"] = record.user.role.value, record.user.status.value
    values["email_key"] = email_key(record.user.email)
    values["password_hash"], values["invitation_hash"] = record.password_hash, record.invitation_hash
    return values


def user(row: Row[Any]) -> UserRecord:
    found = User.model_validate(row._mapping)
    return UserRecord(user=found, password_hash=row.password_hash, invitation_hash=row.invitation_hash)


def session_values(tenant_id: str, record: SessionRecord) -> dict[str, Any]:
    return {**record.model_dump(mode="python"), "tenant": tenant_id}


def session(row: Row[Any]) -> SessionRecord:
    return SessionRecord.model_validate(row._mapping)


CONTACT_FIELDS = tuple(name for name in Contact.model_fields if name != "workflow_instance_ids")


def contact_values(contact: Contact) -> dict[str, Any]:
    """The row of a contact: its fields as they are (plain values, read without a model dump), and its keys."""
    values = {name: getattr(contact, name) for name in CONTACT_FIELDS}
    values["phone_digits"] = phone_digits(contact.phone, contact.phone_e164)
    values["name_key"] = name_key(contact.name)
    values["opted_out"] = {channel.value: at.isoformat() for channel, at in contact.opted_out.items()} or None
    return values


def template(row: Row[Any]) -> WorkflowTemplate:
    fields = {"id": row.id, "tenant": row.tenant, "created_at": row.created_at, "updated_at": row.updated_at}
    return WorkflowTemplate.model_validate({**row.body, **fields, "trigger_errors": row.trigger_errors or []})


def template_body(found: WorkflowTemplate) -> dict[str, Any]:
    return found.model_dump(mode="json", include=_TEMPLATE_BODY_FIELDS)


def template_version(row: Row[Any]) -> TemplateVersion:
    return TemplateVersion(
        template_id=row.template_id,
        version=row.version,
        template=WorkflowTemplate.model_validate(row.body),
        created_at=row.created_at,
    )


INSTANCE_FIELDS = tuple(
    name for name in WorkflowInstance.model_fields if name not in ("nodes", "timeline", "start_node")
)
"""An instance's fields that are columns (`enrol_key`, kept out of its answers, included): plain values, read
without a model dump, which costs more than the rest of a bulk enrolment's row."""


def instance_values(instance: WorkflowInstance) -> dict[str, Any]:
    """The row of an instance. Every save ends a worker's lease: the work it held was for the old revision."""
    values = {name: getattr(instance, name) for name in INSTANCE_FIELDS}
    values["enrol_key"] = None if instance.status in TERMINAL else instance.enrol_key  # free again once it ends
    values["task_action"] = task_action(instance)
    values["worker_id"] = None
    values["worker_lease_until"] = None
    return values


def job_values(job: JobRecord) -> dict[str, Any]:
    return job.model_dump(mode="python")


def job(row: Row[Any]) -> JobRecord:
    return JobRecord.model_validate(row._mapping)


def event(row: Row[Any]) -> Event:
    return Event.model_validate({name: getattr(row, name) for name in Event.model_fields})


def inserted_pk(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def among(conn: Connection, column: Any, values: Sequence[Any], item: Any = String) -> ColumnElement[bool]:
    """`column IN values` (each an `item`). On PostgreSQL one array parameter (`= ANY`): the statement is the same
    text for any number of values, so a batch's lookup of 500 ids is not 500 placeholders rendered, sent and parsed
    each time."""
    found: ColumnElement[bool] = (
        column == any_(literal(list(values), ARRAY(item))) if conn.dialect.name == "postgresql" else column.in_(values)
    )
    return found


def beyond(columns: tuple[Any, ...], values: tuple[Any, ...], *, descending: bool = True) -> ColumnElement[bool]:
    """The rows past a keyset cursor, as one row-value comparison, each value bound as its column's type: the
    index walks straight to the cursor. (Written as `a < x OR (a = x AND b < y)`, every page read all the rows
    before it: 93 ms for a page in the middle of a million rows on PostgreSQL, 45 ms on SQLite, 0.2 ms now.)"""
    left = tuple_(*columns)
    right = tuple_(*(literal(value, column.type) for column, value in zip(columns, values, strict=True)))
    return left < right if descending else left > right


@dataclass(frozen=True)
class DriverForm:
    """A statement as the driver takes it: its text, and how a row of parameters becomes the driver's."""

    sql: str
    names: tuple[str, ...]  # in the driver's order (positional), or the keys it takes (named)
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def row(self, params: dict[str, Any]) -> Any:
        given = map(params.__getitem__, self.names)
        values = [v if p is None else p(v) for p, v in zip(self.processors, given, strict=True)]
        return values if self.positional else dict(zip(self.names, values, strict=True))


@cache
def driver_form(dialect: Dialect, statement: Any, keys: tuple[str, ...]) -> DriverForm:
    """`statement` compiled once for `dialect`, for parameter rows with `keys` (an UPDATE's SET columns follow
    them), with the bind processors SQLAlchemy would apply to each value."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
    processors = compiled._bind_processors
    return DriverForm(compiled.string, names, tuple(processors.get(name) for name in names), positional)


def execute_many(conn: Connection, statement: Any, params: list[dict[str, Any]]) -> int:
    """Run `statement` once per row of `params` (dicts with the same keys) straight through the driver's
    executemany, each value through the bind processor SQLAlchemy would apply, and return the rows it changed.
    Why: SQLAlchemy's per-row parameter handling was a fifth of the worker's time when it fires timers in
    batches."""
    form = driver_form(conn.dialect, statement, tuple(params[0]))
    return driver_executemany(conn, form.sql, [form.row(one) for one in params])


def driver_executemany(conn: Connection, sql: str, rows: list[Any]) -> int:
    """The driver's executemany of `sql` (in the driver's parameter style) on the transaction's connection; the
    rows it changed. The driver's errors become SQLAlchemy's, so the store maps them as it maps any other (a
    unique key: 409; a lost database: 503)."""
    dialect, dbapi = conn.dialect, conn.dialect.loaded_dbapi
    connection = conn.connection.dbapi_connection
    cursor = connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
        return int(cursor.rowcount)
    except dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, connection, cursor)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, connection_invalidated=lost, dialect=dialect) from exc
    finally:
        cursor.close()


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Statements built once: their parameters come at execute time, so SQLAlchemy compiles each only once.
INSERT_CONTACT = insert(s.contacts)
UPDATE_CONTACT = (
    update(s.contacts)
    .where(s.contacts.c.tenant == bindparam("w_tenant"), s.contacts.c.id == bindparam("w_id"))
    .returning(s.contacts.c.pk)
)
INSERT_INSTANCE = insert(s.instances)
UPDATE_INSTANCE = (
    update(s.instances)
    .where(
        s.instances.c.tenant == bindparam("w_tenant"),
        s.instances.c.id == bindparam("w_id"),
        s.instances.c.revision == bindparam("w_revision"),
    )
    .returning(s.instances.c.pk)
)
UPDATE_JOB = update(s.jobs).where(
    s.jobs.c.tenant == bindparam("w_tenant"),
    s.jobs.c.id == bindparam("w_id"),
    s.jobs.c.revision == bindparam("w_revision"),
)


MANY_EVENTS = 100
"""From this many events in one append (a bulk enrolment's batch), the backends write them past SQLAlchemy's
per-row parameter processing: PostgreSQL by `COPY`, SQLite by the driver's executemany."""
EVENT_COLUMNS: tuple[str, ...] = ("tenant", "id", "instance_id", "contact_id", "template_id", "type", "timestamp")
EVENT_COLUMNS += ("node_id", "actor", "data", "message", "sequence")


def event_row(tenant: str, e: Event, timestamp: Any, sequence: int) -> tuple[Any, ...]:
    """An event as `EVENT_COLUMNS` values; `timestamp` already as the backend stores it, `data` as JSON text."""
    head = (tenant, e.id, e.instance_id, e.contact_id, e.template_id, e.type.value, timestamp, e.node_id, e.actor)
    return (*head, s.json_text(e.data), e.message, sequence)
