"""Schema migrations: numbered steps, applied in order, each recorded in `schema_migrations`.

A step is a function of a connection; it may branch on the dialect for what only one backend has
(SQLite's FTS5 search index, PostgreSQL's trigram indexes). Never edit a released step: add a new one.
Step 1 creates the tables as `schema.py` describes them now; later steps bring a database made by an older
version up to date and skip what step 1 already made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Index, bindparam, delete, func, inspect, select, update

from . import schema
from .phones import name_key
from .sql.rows import event as event_of
from .sql.tally_rows import write_tallies
from .tallies import COUNTED_EVENTS, Tally

Step = Callable[[Connection], None]

_SQLITE_SEARCH = [
    # Trigram FTS over name, email and the phone's digits: substring search that stays fast at a million rows.
    # The tenant rides along unindexed, so a search walks matches newest first and stops after one page.
    "CREATE VIRTUAL TABLE contacts_fts USING fts5("
    "name, email, phone_digits, tenant UNINDEXED, content='contacts', content_rowid='pk', tokenize='trigram')",
    "CREATE TRIGGER contacts_fts_ai AFTER INSERT ON contacts BEGIN "
    "INSERT INTO contacts_fts(rowid, name, email, phone_digits, tenant) "
    "VALUES (new.pk, new.name, coalesce(new.email, ''), coalesce(new.phone_digits, ''), new.tenant); END",
    "CREATE TRIGGER contacts_fts_ad AFTER DELETE ON contacts BEGIN "
    "INSERT INTO contacts_fts(contacts_fts, rowid, name, email, phone_digits, tenant) "
    "VALUES ('delete', old.pk, old.name, coalesce(old.email, ''), coalesce(old.phone_digits, ''), old.tenant); END",
    "CREATE TRIGGER contacts_fts_au AFTER UPDATE OF name, email, phone_digits ON contacts BEGIN "
    "INSERT INTO contacts_fts(contacts_fts, rowid, name, email, phone_digits) "
    "VALUES ('delete', old.pk, old.name, coalesce(old.email, ''), coalesce(old.phone_digits, '')); "
    "INSERT INTO contacts_fts(rowid, name, email, phone_digits, tenant) "
    "VALUES (new.pk, new.name, coalesce(new.email, ''), coalesce(new.phone_digits, ''), new.tenant); END",
]

_POSTGRES_SEARCH = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_contacts_name_trgm ON contacts USING gin (lower(name) gin_trgm_ops)",
    "CREATE INDEX ix_contacts_email_trgm ON contacts USING gin (lower(email) gin_trgm_ops)",
    "CREATE INDEX ix_contacts_phone_trgm ON contacts USING gin (phone_digits gin_trgm_ops)",
]


def _initial(conn: Connection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t is not schema.schema_migrations]
    schema.metadata.create_all(conn, tables=tables)


def _search_index(conn: Connection) -> None:
    statements = _POSTGRES_SEARCH if conn.dialect.name == "postgresql" else _SQLITE_SEARCH
    for statement in statements:
        conn.exec_driver_sql(statement)


def _add_columns(conn: Connection, table: str, columns: Iterable[Column[Any]]) -> None:
    """Add those of `columns` that `table` does not have yet (a database created later has them from step 1)."""
    have = {column["name"] for column in inspect(conn).get_columns(table)}
    for column in columns:
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}")


def _add_index(conn: Connection, index: Index) -> None:
    """Create `index` unless its table has it (a database created later has it from step 1)."""
    assert index.table is not None  # every index of the schema is declared on its table
    if index.name not in {found["name"] for found in inspect(conn).get_indexes(index.table.name)}:
        index.create(conn)


def _engine_columns(conn: Connection) -> None:
    _add_columns(conn, "instances", schema.INSTANCE_WORK_COLUMNS)
    indexes = {index["name"] for index in inspect(conn).get_indexes("instances")}
    if "ix_instances_wake" in indexes:  # replaced by the partial ix_instances_due, which claims walk in order
        conn.exec_driver_sql("DROP INDEX ix_instances_wake")
    for index in schema.INSTANCE_WORK_INDEXES:
        if index.name not in indexes:
            index.create(conn)


def _name_keys(conn: Connection) -> None:
    """Contacts stored before short-name search get their `name_key`, in batches, then its index."""
    if "name_key" not in {column["name"] for column in inspect(conn).get_columns("contacts")}:
        kind = schema.NAME_KEY.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE contacts ADD COLUMN name_key {kind}")
    c = schema.contacts.c
    while True:
        todo = conn.execute(select(c.pk, c.name).where(c.name_key.is_(None)).limit(5_000)).all()
        if not todo:
            break
        keys = [{"w_pk": pk, "name_key": name_key(name)} for pk, name in todo]
        conn.execute(update(schema.contacts).where(c.pk == bindparam("w_pk")), keys)
    _add_index(conn, schema.NAME_KEY_INDEX)


def _jobs(conn: Connection) -> None:
    """The jobs table, and the index bulk enrolment asks which contacts a template has already."""
    if not inspect(conn).has_table("jobs"):
        schema.jobs.create(conn)  # with its indexes
    _add_index(conn, schema.ENROLLED_INDEX)


def _tallies(conn: Connection) -> None:
    """The campaign-number counts, and `node_entered_at` on instances; counts for what is already stored.

    Where instances are now comes from one aggregate query; what happened (nodes entered and left, ends reached)
    from the events, read in batches of 5,000 so no table is held in memory. Visits timed before this version have
    no duration, so the medians start with the steps taken after it.
    """
    if "node_entered_at" not in {column["name"] for column in inspect(conn).get_columns("instances")}:
        kind = schema.NODE_ENTERED_AT.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE instances ADD COLUMN node_entered_at {kind}")
    if inspect(conn).has_table("workflow_tallies"):
        conn.execute(delete(schema.workflow_tallies))  # counted again below, from what is stored
    else:
        schema.workflow_tallies.create(conn)
    i = schema.instances.c
    placed = select(i.tenant, i.template_id, i.status, i.current_node, func.count()).group_by(
        i.tenant, i.template_id, i.status, i.current_node
    )
    by_tenant: dict[str, Tally] = {}
    for tenant, template_id, status, node, n in conn.execute(placed):
        by_tenant.setdefault(tenant, Tally()).placed(template_id, status, node, n)
    write_tallies(conn, by_tenant.items(), shard=0)
    e = schema.events.c
    kinds = [t.value for t in COUNTED_EVENTS]
    last = 0
    while True:
        batch = conn.execute(
            select(schema.events).where(e.seq > last, e.type.in_(kinds)).order_by(e.seq).limit(5_000)
        ).all()
        if not batch:
            break
        by_tenant = {}
        for row in batch:
            by_tenant.setdefault(row.tenant, Tally()).events([event_of(row)])
        write_tallies(conn, by_tenant.items(), shard=0)
        last = batch[-1].seq


def _contacts_import(conn: Connection) -> None:
    """Staged job rows, and contacts by email and by E.164 phone (an import's batched lookups)."""
    if not inspect(conn).has_table("job_rows"):
        schema.job_rows.create(conn)
    for statement in schema.CONTACT_MATCH_INDEXES[conn.dialect.name]:
        conn.exec_driver_sql(statement)


def _outbox(conn: Connection) -> None:
    """Every stored event gets its tenant's sequence (in the order they were written), then the outbox tables."""
    if "sequence" not in {column["name"] for column in inspect(conn).get_columns("events")}:
        kind = BigInteger().compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE events ADD COLUMN sequence {kind}")
    conn.exec_driver_sql(
        "UPDATE events SET sequence = numbered.n FROM "
        "(SELECT seq, row_number() OVER (PARTITION BY tenant ORDER BY seq) AS n FROM events) AS numbered "
        "WHERE events.seq = numbered.seq AND events.sequence IS NULL"
    )
    _add_index(conn, next(i for i in schema.events.indexes if i.name == "ix_events_sequence"))
    for table in (schema.event_sequences, schema.outbox_cursors):
        if not inspect(conn).has_table(table.name):
            table.create(conn)
    conn.exec_driver_sql(
        "INSERT INTO event_sequences (tenant, last) SELECT tenant, max(sequence) FROM events "
        "WHERE sequence IS NOT NULL GROUP BY tenant ON CONFLICT (tenant) DO NOTHING"
    )


def _subscriptions(conn: Connection) -> None:
    """Webhook subscriptions and their deliveries, with their indexes."""
    for table in (schema.subscriptions, schema.deliveries):
        if not inspect(conn).has_table(table.name):
            table.create(conn)


def _triggers(conn: Connection) -> None:
    """Templates' triggers and goals beside their bodies (and their partial index), the latest trigger errors, and
    the enrolment key of trigger-started instances with its partial unique index."""
    _add_columns(conn, "templates", schema.TEMPLATE_HOOK_COLUMNS)
    t = schema.templates.c
    last = 0
    while True:  # the hooks of templates stored before, in batches
        batch = conn.execute(select(t.pk, t.body).where(t.pk > last).order_by(t.pk).limit(1_000)).all()
        if not batch:
            break
        for pk, body in batch:
            triggers, goals = body.get("triggers") or [], body.get("goals") or []
            if triggers or goals:
                hooks = {"triggers": triggers, "goals": goals}
                conn.execute(update(schema.templates).where(t.pk == pk).values(hooks=hooks))
        last = batch[-1].pk
    _add_index(conn, schema.HOOKED_INDEX)
    if "enrol_key" not in {column["name"] for column in inspect(conn).get_columns("instances")}:
        kind = schema.ENROL_KEY.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE instances ADD COLUMN enrol_key {kind}")
    _add_index(conn, schema.ENROL_KEY_INDEX)


def _people(conn: Connection) -> None:
    """People who sign in to the web pages, and their sessions, with their indexes (step 1 made them already on a
    database created at this version or later)."""
    for table in (schema.users, schema.sessions):
        if not inspect(conn).has_table(table.name):
            table.create(conn)


def _held_tasks(conn: Connection) -> None:
    """The index of the tasks each person or token holds."""
    _add_index(conn, schema.HELD_INDEX)


def _consent(conn: Connection) -> None:
    """A contact's time zone and the channels it opted out of."""
    _add_columns(conn, "contacts", [schema.contacts.c.timezone, schema.contacts.c.opted_out])


def _tenant_settings(conn: Connection) -> None:
    """Tenants' contact rules (time zone, contact hours, frequency caps), and the sends the caps count."""
    _add_columns(conn, "tenants", [schema.tenants.c.settings])
    if not inspect(conn).has_table(schema.sends.name):
        schema.sends.create(conn)


def _retries(conn: Connection) -> None:
    """Come-back-later tries of instances at their node."""
    _add_columns(conn, "instances", [schema.RETRIES])


def _timers_due(conn: Connection) -> None:
    """The index of due timers alone (the worker's second look when slow work fills its claim)."""
    _add_index(conn, schema.TIMERS_DUE_INDEX)


MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "initial tables", _initial),
    (2, "contact search index", _search_index),
    (3, "work queue, AI suggestions and worker leases on instances", _engine_columns),
    (4, "name keys for short-name search", _name_keys),
    (5, "jobs, and unfinished instances by template and contact", _jobs),
    (6, "campaign-number counts, and when an instance entered its node", _tallies),
    (7, "staged job rows; contacts by email and phone for imports", _contacts_import),
    (8, "the outbox: a sequence per tenant on events, and readers' cursors", _outbox),
    (9, "webhook subscriptions and deliveries", _subscriptions),
    (10, "triggers and goals of templates, trigger errors, enrolment keys of instances", _triggers),
    (11, "people who sign in to the web pages, and their sessions", _people),
    (12, "the tasks each person or token holds", _held_tasks),
    (13, "contacts' time zones and opt-outs", _consent),
    (14, "tenants' contact rules and the sends frequency caps count", _tenant_settings),
    (15, "come-back-later tries of instances", _retries),
    (16, "due timers by themselves, for the worker's claims", _timers_due),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_migrations"):
        return 0
    versions = conn.execute(select(schema.schema_migrations.c.version)).scalars().all()
    return max(versions, default=0)


def migrate(conn: Connection) -> list[int]:
    """Apply every step newer than the schema's version; return the versions applied. Caller holds a transaction."""
    schema.metadata.create_all(conn, tables=[schema.schema_migrations])
    # Every step not recorded yet, not only those above the highest: steps written side by side on two branches
    # (6 and 7) are each applied once, whichever was merged first.
    done = set(conn.execute(select(schema.schema_migrations.c.version)).scalars())
    applied = []
    for version, name, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(schema.schema_migrations.insert().values(version=version, name=name, applied_at=datetime.now(UTC)))
        applied.append(version)
    return applied
