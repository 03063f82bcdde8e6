"""The relational schema, in SQLAlchemy Core, shared by the SQLite and PostgreSQL stores.

Every table carries `tenant`, and every unique key starts with it: two tenants may use the same ids.
Integer `pk` columns give SQLite a rowid for the FTS index and give every list a cheap stable tiebreak.
Timestamps are stored as fixed-width ISO 8601 text in UTC on SQLite (so text order is time order) and as
`timestamptz` on PostgreSQL. Instances point at a content-addressed snapshot of their template's nodes, so a
hundred thousand instances of one template share one frozen copy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = MetaData()

BigPk = BigInteger().with_variant(Integer, "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes: `timestamptz` on PostgreSQL, sortable fixed-width text elsewhere."""

    impl = String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(String(32))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(value)


def _tenant() -> Column[str]:
    return Column("tenant", String(64), nullable=False)


def _tag_table(name: str, fk: str) -> Table:
    """Tags of one kind of record, one row each: filters join here, and lists by tag walk `ix_<name>_order`."""
    return Table(
        name,
        metadata,
        _tenant(),
        Column("tag", String(64), nullable=False),
        Column(fk, BigPk, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),  # the record's (immutable), to list newest first
        UniqueConstraint("tenant", "tag", fk, name=f"uq_{name}"),
        Index(f"ix_{name}_order", "tenant", "tag", "created_at", fk),
        Index(f"ix_{name}_{fk.removesuffix('_pk')}", fk),
    )


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("id", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("name", String(200)),
    Column("secret_hash", String(128), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant", "id", name="uq_tokens_tenant_id"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(40)),
    Column("phone_e164", String(20)),
    Column("phone_digits", String(40)),
    Column("county", String(200)),
    Column("organization", String(200)),
    Column("role", String(200)),
    Column("external_id", String(200)),
    Column("tags", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant", "id", name="uq_contacts_tenant_id"),
    UniqueConstraint("tenant", "external_id", name="uq_contacts_tenant_external_id"),
    Index("ix_contacts_created", "tenant", "created_at", "pk"),
    Index("ix_contacts_county", "tenant", "county", "created_at", "pk"),
    Index("ix_contacts_organization", "tenant", "organization", "created_at", "pk"),
)

contact_tags = _tag_table("contact_tags", "contact_pk")

templates = Table(
    "templates",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("id", String(64), nullable=False),
    Column("version", String(40), nullable=False),
    Column("body", Json, nullable=False),
    Column("tags", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant", "id", name="uq_templates_tenant_id"),
    Index("ix_templates_created", "tenant", "created_at", "pk"),
)

template_tags = _tag_table("template_tags", "template_pk")

template_versions = Table(
    "template_versions",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("template_id", String(64), nullable=False),
    Column("version", String(40), nullable=False),
    Column("body", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant", "template_id", "version", name="uq_template_versions"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(64), primary_key=True),
    _tenant(),
    Column("start_node", String(64), nullable=False),
    Column("nodes", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


def _instance_work_columns() -> list[Column[Any]]:
    """Columns added by migration 3 (the engine): tasks, AI suggestions and the worker's lease."""
    return [
        Column("task_since", UTCDateTime()),  # waiting for a person since
        Column("task_action", String(64)),  # the action of that task's node, for the work queue's filter
        Column("suggestion", Json),
        Column("worker_id", String(64)),  # the worker holding the instance's due work, until its lease ends
        Column("worker_lease_until", UTCDateTime()),
    ]


INSTANCE_WORK_COLUMNS = _instance_work_columns()
# Written out, not bound: a partial index is used only when the query repeats its condition literally.
MOVABLE_SQL = text("status IN ('active', 'waiting')")
INSTANCE_WORK_INDEXES = [
    # The worker's claim: due work in wake order, without sorting every waiting instance (a partial index holds
    # only instances that can move, so timers of finished instances cost nothing).
    Index("ix_instances_due", "wake_at", postgresql_where=MOVABLE_SQL, sqlite_where=MOVABLE_SQL),
    Index("ix_instances_tasks", "tenant", "task_since", "pk"),
    Index("ix_instances_waiting", "tenant", "waiting_for", "created_at", "pk"),
]

instances = Table(
    "instances",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("id", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("template_id", String(64), nullable=False),
    Column("template_version", String(40), nullable=False),
    Column("snapshot_id", String(64), nullable=False),
    Column("current_node", String(64)),
    Column("status", String(20), nullable=False),
    Column("paused_status", String(20)),
    Column("end_status", String(64)),
    Column("state", Json, nullable=False),
    Column("tags", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("completed_at", UTCDateTime()),
    Column("wake_at", UTCDateTime()),
    Column("waiting_for", String(200)),
    Column("held_by", String(64)),
    Column("lease_expires_at", UTCDateTime()),
    Column("revision", Integer, nullable=False),
    *INSTANCE_WORK_COLUMNS,
    UniqueConstraint("tenant", "id", name="uq_instances_tenant_id"),
    Index("ix_instances_created", "tenant", "created_at", "pk"),
    Index("ix_instances_contact", "tenant", "contact_id", "created_at", "pk"),
    Index("ix_instances_template", "tenant", "template_id", "created_at", "pk"),
    Index("ix_instances_status", "tenant", "status", "created_at", "pk"),
    Index("ix_instances_node", "tenant", "current_node", "created_at", "pk"),
    *INSTANCE_WORK_INDEXES,
)

instance_tags = _tag_table("instance_tags", "instance_pk")

events = Table(
    "events",
    metadata,
    Column("seq", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    Column("id", String(64), nullable=False),
    Column("instance_id", String(64)),
    Column("contact_id", String(64)),
    Column("template_id", String(64)),
    Column("type", String(40), nullable=False),
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("node_id", String(64)),
    Column("actor", String(200), nullable=False),
    Column("data", Json, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_events_instance", "tenant", "instance_id", "seq"),
    Index("ix_events_contact", "tenant", "contact_id", "seq"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _tenant(),
    Column("route", String(300), nullable=False),
    Column("key", String(255), nullable=False),
    Column("token_id", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("done", Boolean, nullable=False),
    Column("status_code", Integer),
    Column("response", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant", "route", "key", name="uq_idempotency"),
    Index("ix_idempotency_created", "created_at"),
)
