"""The relational schema, in SQLAlchemy Core, shared by the SQLite and PostgreSQL stores.

Every table carries `tenant`, and every unique key starts with it: two tenants may use the same ids.
Integer `pk` columns give SQLite a rowid for the FTS index and give every list a cheap stable tiebreak.
Timestamps are stored as fixed-width ISO 8601 text in UTC on SQLite (so text order is time order) and as
`timestamptz` on PostgreSQL. Instances point at a content-addressed snapshot of their template's nodes, so a
hundred thousand instances of one template share one frozen copy.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import orjson
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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = MetaData()


def json_text(value: Any) -> str:
    """A JSON column's text (the engines' `json_serializer`): orjson, several times faster than `json`; `json`
    for what orjson refuses (integers beyond 64 bits, keys that are not strings), so nothing accepted fails."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# 19 digits in a row may be an integer beyond 64 bits, which orjson would read as a float: `json` reads those exactly.
_LONG_NUMBER = re.compile(r"\d{19}")


def json_value(stored: str | bytes) -> Any:
    """A JSON column's value (the engines' `json_deserializer`): orjson, or `json` for long integers and for what
    only `json` wrote (NaN)."""
    text = stored.decode() if isinstance(stored, bytes) else stored
    if _LONG_NUMBER.search(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


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
        if dialect.name == "postgresql":
            return value.astimezone(UTC)
        return self.stored_text(value)

    @staticmethod
    def stored_text(value: datetime) -> str:
        """How SQLite keeps an aware time: fixed-width UTC text, which sorts as the times do."""
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds")  # the text strftime("%Y-%m-%dT%H:%M:%S.%f+00:00") gave, faster

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(value)


def _tenant() -> Column[str]:
    return Column("tenant", String(64), nullable=False)


def _required(name: str, kind: Any) -> Column[Any]:
    return Column(name, kind, nullable=False)


def _required_text(**lengths: int) -> list[Column[Any]]:
    """Text columns that must be set, by name and longest length."""
    return [_required(name, String(length)) for name, length in lengths.items()]


def _optional_text(**lengths: int) -> list[Column[Any]]:
    """Nullable text columns, by name and longest length."""
    return [Column(name, String(length)) for name, length in lengths.items()]


def _created_updated() -> list[Column[Any]]:
    return [_required("created_at", UTCDateTime()), _required("updated_at", UTCDateTime())]


def _newest_first(table: str, suffix: str, *columns: str) -> Index:
    """The index a list (filtered on `columns`) walks, newest first: (tenant, *columns, created_at, pk)."""
    return Index(f"ix_{table}_{suffix}", "tenant", *columns, "created_at", "pk")


def _records(name: str, *columns: Any) -> Table:
    """A table of records with ids of their own: an integer `pk`, the tenant, and an `id` unique in the tenant."""
    return Table(
        name,
        metadata,
        Column("pk", BigPk, primary_key=True, autoincrement=True),
        _tenant(),
        _required("id", String(64)),
        *columns,
        UniqueConstraint("tenant", "id", name=f"uq_{name}_tenant_id"),
    )


def _tag_table(name: str, fk: str) -> Table:
    """Tags of one kind of record, one row each: filters join here, and lists by tag walk `ix_<name>_order`."""
    return Table(
        name,
        metadata,
        _tenant(),
        _required("tag", String(64)),
        _required(fk, BigPk),
        _required("created_at", UTCDateTime()),  # the record's (immutable), to list newest first
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
    Column("settings", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")),
)

tokens = _records(
    "tokens",
    _required("role", String(20)),
    Column("name", String(200)),
    Column("secret_hash", String(128), nullable=False, unique=True),
    _required("created_at", UTCDateTime()),
)

# The case-folded name (`phones.name_key`) that one- and two-character searches match the start of. Compared byte
# by byte (collation "C" on PostgreSQL, SQLite's default), so a prefix is the range [prefix, next prefix).
NAME_KEY = Column("name_key", String(200).with_variant(String(200, collation="C"), "postgresql"))
NAME_KEY_INDEX = Index("ix_contacts_name_key", "tenant", "name_key", "pk")

contacts = _records(
    "contacts",
    _required("name", String(200)),
    *_optional_text(email=320, phone=40, phone_e164=20, phone_digits=40, county=200, organization=200, role=200),
    Column("external_id", String(200)),
    _required("tags", Json),
    _required("metadata", Json),
    *_created_updated(),
    NAME_KEY,
    Column("timezone", String(64)),
    Column("opted_out", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")),
    UniqueConstraint("tenant", "external_id", name="uq_contacts_tenant_external_id"),
    NAME_KEY_INDEX,
    _newest_first("contacts", "created"),
    _newest_first("contacts", "county", "county"),
    _newest_first("contacts", "organization", "organization"),
)

contact_tags = _tag_table("contact_tags", "contact_pk")

# Added by migration 10: what a template listens for (its triggers and goals, NULL when it has none), read on every
# contact change along a partial index that holds only such templates; and the latest of them that could not run.
NullableJson = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
TEMPLATE_HOOK_COLUMNS = [Column("hooks", NullableJson), Column("trigger_errors", NullableJson)]
HOOKED_SQL = text("hooks IS NOT NULL")  # written out, as the partial index's condition must be repeated
HOOKED_INDEX = Index("ix_templates_hooked", "tenant", postgresql_where=HOOKED_SQL, sqlite_where=HOOKED_SQL)

templates = _records(
    "templates",
    _required("version", String(40)),
    _required("body", Json),
    _required("tags", Json),
    *_created_updated(),
    *TEMPLATE_HOOK_COLUMNS,
    _newest_first("templates", "created"),
    HOOKED_INDEX,
)

template_versions = Table(
    "template_versions",
    metadata,
    Column("pk", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    *_required_text(template_id=64, version=40),
    _required("body", Json),
    _required("created_at", UTCDateTime()),
    UniqueConstraint("tenant", "template_id", "version", name="uq_template_versions"),
)

template_tags = _tag_table("template_tags", "template_pk")

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
RETRIES = Column("retries", Integer)  # come-back-later tries at the current node (migration 15)
# Written out, not bound: a partial index is used only when the query repeats its condition literally.
MOVABLE_SQL = text("status IN ('active', 'waiting')")
INSTANCE_WORK_INDEXES = [
    # The worker's claim: due work in wake order, without sorting every waiting instance (a partial index holds
    # only instances that can move, so timers of finished instances cost nothing).
    Index("ix_instances_due", "wake_at", postgresql_where=MOVABLE_SQL, sqlite_where=MOVABLE_SQL),
    Index("ix_instances_tasks", "tenant", "task_since", "pk"),
    _newest_first("instances", "waiting", "waiting_for"),
]

# Unfinished instances by template and contact: which contacts of a batch a template has already (bulk enrolment).
# Partial, so finished instances (most of them, in time) cost nothing; the condition is written out, as above.
ENROLLED_SQL = text("status IN ('pending', 'active', 'waiting', 'paused')")
ENROLLED_INDEX = Index(
    "ix_instances_enrolled",
    "tenant",
    "template_id",
    "contact_id",
    postgresql_where=ENROLLED_SQL,
    sqlite_where=ENROLLED_SQL,
)

# The tasks a person or token holds (the volunteer screen after a reload, a volunteer's own list): few rows, so
# partial; `held_by = ?` in a query implies the condition, on SQLite and PostgreSQL alike.
HELD_SQL = text("held_by IS NOT NULL")
HELD_INDEX = Index(
    "ix_instances_held", "tenant", "held_by", "task_since", "pk", postgresql_where=HELD_SQL, sqlite_where=HELD_SQL
)

# Added by migration 16: due timers alone in wake order (a wait's time, a come-back-later, an event's timeout), so a
# worker that cannot start more slow work (a model, a webhook) still finds the timers due behind a backlog of it.
# The condition is the one `DueWork.timer` reads, written out as above.
TIMER_DUE_SQL = text(
    "status IN ('active', 'waiting') AND (waiting_for IN ('timer', 'retry') OR waiting_for LIKE 'event:%')"
)
TIMERS_DUE_INDEX = Index(
    "ix_instances_timers_due", "wake_at", postgresql_where=TIMER_DUE_SQL, sqlite_where=TIMER_DUE_SQL
)

NODE_ENTERED_AT: Column[Any] = Column("node_entered_at", UTCDateTime())  # added by migration 6: time spent at a node

# Added by migration 10: `<template id>:<contact id>` on an unfinished instance a trigger started, unique in the
# tenant, so two transactions raising the same trigger for one contact at once make one instance (the second's
# INSERT … ON CONFLICT DO NOTHING inserts nothing). Cleared when the instance ends: the contact may enter again.
ENROL_KEY: Column[Any] = Column("enrol_key", String(200))
ENROL_KEY_SQL = text("enrol_key IS NOT NULL")
ENROL_KEY_INDEX = Index(
    "uq_instances_enrol_key",
    "tenant",
    "enrol_key",
    unique=True,
    postgresql_where=ENROL_KEY_SQL,
    sqlite_where=ENROL_KEY_SQL,
)

instances = _records(
    "instances",
    *_required_text(contact_id=64, template_id=64, template_version=40, snapshot_id=64),
    Column("current_node", String(64)),
    NODE_ENTERED_AT,
    _required("status", String(20)),
    *_optional_text(paused_status=20, end_status=64),
    *(_required(name, Json) for name in ("state", "tags", "metadata")),
    *_created_updated(),
    *(Column(name, UTCDateTime()) for name in ("started_at", "completed_at", "wake_at")),
    *_optional_text(waiting_for=200, held_by=64),
    Column("lease_expires_at", UTCDateTime()),
    _required("revision", Integer),
    *INSTANCE_WORK_COLUMNS,
    ENROL_KEY,
    RETRIES,
    _newest_first("instances", "created"),
    _newest_first("instances", "contact", "contact_id"),
    _newest_first("instances", "template", "template_id"),
    _newest_first("instances", "status", "status"),
    _newest_first("instances", "node", "current_node"),
    *INSTANCE_WORK_INDEXES,
    ENROLLED_INDEX,
    ENROL_KEY_INDEX,
    HELD_INDEX,
    TIMERS_DUE_INDEX,
)

instance_tags = _tag_table("instance_tags", "instance_pk")

events = Table(
    "events",
    metadata,
    Column("seq", BigPk, primary_key=True, autoincrement=True),
    _tenant(),
    _required("id", String(64)),
    *_optional_text(instance_id=64, contact_id=64, template_id=64),
    _required("type", String(40)),
    _required("timestamp", UTCDateTime()),
    Column("node_id", String(64)),
    _required("actor", String(200)),
    _required("data", Json),
    _required("message", Text),
    Column("sequence", BigInteger),  # the tenant's outbox order, given as the transaction commits (outbox.py)
    Index("ix_events_instance", "tenant", "instance_id", "seq"),
    Index("ix_events_contact", "tenant", "contact_id", "seq"),
    Index("ix_events_sequence", "tenant", "sequence", unique=True),
)

# The outbox: each tenant's last event sequence, taken (and its row locked) just before a transaction commits, so
# sequences become visible in order and without gaps; and how far each reader of the outbox has come.
event_sequences = Table(
    "event_sequences",
    metadata,
    Column("tenant", String(64), primary_key=True),
    _required("last", BigInteger),
)
outbox_cursors = Table(
    "outbox_cursors",
    metadata,
    _tenant(),
    _required("name", String(64)),
    _required("sequence", BigInteger),
    PrimaryKeyConstraint("tenant", "name"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _tenant(),
    *_required_text(route=300, key=255, token_id=64, request_hash=64),
    _required("done", Boolean),
    Column("status_code", Integer),
    Column("response", Text),
    _required("created_at", UTCDateTime()),
    UniqueConstraint("tenant", "route", "key", name="uq_idempotency"),
    Index("ix_idempotency_created", "created_at"),
)

# The worker's claim of a job: unfinished jobs, oldest first (a partial index: finished jobs cost nothing).
UNFINISHED_JOBS_SQL = text("status IN ('queued', 'running')")

jobs = _records(
    "jobs",
    *_required_text(kind=40, status=20),
    *(_required(name, Json) for name in ("params", "progress", "result")),
    *(Column(name, Text) for name in ("error", "cursor")),
    _required("cancel_requested", Boolean),
    *_optional_text(held_by=64, created_by=64),
    Column("lease_until", UTCDateTime()),
    _required("created_at", UTCDateTime()),
    *(Column(name, UTCDateTime()) for name in ("started_at", "finished_at")),
    _required("revision", Integer),
    _newest_first("jobs", "created"),
    Index(
        "ix_jobs_unfinished",
        "created_at",
        "id",
        postgresql_where=UNFINISHED_JOBS_SQL,
        sqlite_where=UNFINISHED_JOBS_SQL,
    ),
)


# Campaign numbers as counts (`tallies.py`), written by each step's transaction. A count is split over a few
# `shard` rows on PostgreSQL, each transaction adding to one of them, so concurrent steps at the same node rarely
# wait for each other's row lock; a question sums them. The primary key is the index the stats read walks.
workflow_tallies = Table(
    "workflow_tallies",
    metadata,
    _tenant(),
    _required("template_id", String(64)),
    _required("hour", Integer),  # hours since 1970 of a happening; 0 for the all-time counts
    _required("metric", String(16)),
    _required("node", String(64)),
    _required("key", String(100)),
    _required("shard", Integer),
    _required("n", BigInteger),
    PrimaryKeyConstraint("tenant", "template_id", "hour", "metric", "node", "key", "shard"),
)

# Contacts import: the indexed lookups of a batch of rows by email (compared without case) and by E.164 phone.
# Written out (migration 7), not bound to the table: SQLite's index is on the column with NOCASE (reflection reads
# it as a plain column), PostgreSQL's on lower(email), and queries repeat the same expression to use it.
CONTACT_MATCH_INDEXES = {
    "sqlite": [
        "CREATE INDEX IF NOT EXISTS ix_contacts_email_nocase ON contacts (tenant, email COLLATE NOCASE)",
        "CREATE INDEX IF NOT EXISTS ix_contacts_phone_e164 ON contacts (tenant, phone_e164)",
    ],
    "postgresql": [
        "CREATE INDEX IF NOT EXISTS ix_contacts_email_lower ON contacts (tenant, lower(email))",
        "CREATE INDEX IF NOT EXISTS ix_contacts_phone_e164 ON contacts (tenant, phone_e164)",
    ],
}

# What a job reads, staged when it was queued (an import's rows, a chunk per row): the worker may be elsewhere.
job_rows = Table(
    "job_rows",
    metadata,
    _tenant(),
    _required("job_id", String(64)),
    _required("seq", Integer),
    _required("chunk", Json),
    UniqueConstraint("tenant", "job_id", "seq", name="uq_job_rows"),
)

# Webhook subscriptions (migration 9): the secret is kept as given, since signing each delivery needs it.
subscriptions = _records(
    "subscriptions",
    _required("url", String(2048)),
    _required("events", Json),
    _required("secret", String(200)),
    _required("enabled", Boolean),
    Column("disabled_reason", String(500)),
    _required("failure_count", Integer),
    Column("failing_since", UTCDateTime()),
    _required("after_sequence", BigInteger),  # events up to this outbox sequence came before it: not sent to it
    *_created_updated(),
    _newest_first("subscriptions", "created"),
)

# One message (an event) to one subscription. Written out, not bound: a partial index serves a query only when the
# query repeats its condition literally.
PENDING_DELIVERIES_SQL = text("status = 'pending'")
deliveries = _records(
    "deliveries",
    *_required_text(subscription_id=64, webhook_id=64, event_type=40, order_key=80, status=20),
    _required("event_sequence", BigInteger),
    _required("attempts", Json),
    Column("next_attempt_at", UTCDateTime()),
    Column("held_by", String(64)),
    Column("lease_until", UTCDateTime()),
    _required("body", Text),
    _required("created_at", UTCDateTime()),
    Column("redelivered_at", UTCDateTime()),
    UniqueConstraint("tenant", "subscription_id", "event_sequence", name="uq_deliveries_event"),
    # The sender's claim: pending deliveries by due time (sent and failed ones cost nothing).
    Index(
        "ix_deliveries_due",
        "next_attempt_at",
        postgresql_where=PENDING_DELIVERIES_SQL,
        sqlite_where=PENDING_DELIVERIES_SQL,
    ),
    # The order check: is an earlier delivery of this subscription and instance still pending?
    Index(
        "ix_deliveries_queue",
        "tenant",
        "subscription_id",
        "order_key",
        "event_sequence",
        postgresql_where=PENDING_DELIVERIES_SQL,
        sqlite_where=PENDING_DELIVERIES_SQL,
    ),
    # The log, newest first, with or without a status filter.
    _newest_first("deliveries", "log", "subscription_id"),
    _newest_first("deliveries", "log_status", "subscription_id", "status"),
)

# People who sign in to the web pages (migration 11): the address as given and its case-folded key (unique in the
# tenant; indexed alone too, for sign-in by address across tenants, oldest first), the argon2 hash of the password
# (NULL while invited) and the SHA-256 of a pending invitation's secret.
users = _records(
    "users",
    *_required_text(email=320, email_key=320, name=200, role=20, status=20),
    *_optional_text(password_hash=255, invitation_hash=128),
    Column("invitation_expires_at", UTCDateTime()),
    _required("created_at", UTCDateTime()),
    UniqueConstraint("tenant", "email_key", name="uq_users_tenant_email_key"),
    Index("ix_users_email_key", "email_key", "created_at", "pk"),
    _newest_first("users", "created"),
)

# Signed-in browsers: the SHA-256 of the cookie's secret (never the secret) and the token their forms carry. By
# person, for removing someone with their sessions; by expiry, for the purge of expired ones.
sessions = Table(
    "sessions",
    metadata,
    _tenant(),
    *_required_text(id=64, user_id=64, secret_hash=128, csrf_token=128),
    _required("created_at", UTCDateTime()),
    _required("expires_at", UTCDateTime()),
    PrimaryKeyConstraint("tenant", "id"),
    Index("ix_sessions_user", "tenant", "user_id"),
    Index("ix_sessions_expires", "expires_at"),
)

# What frequency caps count (migration 14): each automatic send to a contact on a channel, when the worker's check
# let it go. Read under the contact's lock, so two sends to one person cannot both pass a cap.
sends = Table(
    "sends",
    metadata,
    _tenant(),
    *_required_text(contact_id=64, channel=16),
    _required("at", UTCDateTime()),
    Index("ix_sends_contact", "tenant", "contact_id", "channel", "at"),
)
