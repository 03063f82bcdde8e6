"""The store contract: every operation the services use, run against each backend.

Backends are listed in `BACKENDS`; a new backend joins by adding a factory there, and must pass every case.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from cbworkflow.errors import Conflict, InvalidInput
from cbworkflow.ids import new_id
from cbworkflow.models.access import Role, Tenant, Token
from cbworkflow.models.contacts import Contact
from cbworkflow.models.events import Event, EventType
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.models.templates import TemplateVersion, WorkflowTemplate
from cbworkflow.services.instances import snapshot_of
from cbworkflow.store.base import (
    ContactFilter,
    IdempotencyRecord,
    InstanceFilter,
    Page,
    PageRequest,
    Store,
    SystemTx,
    TaskFilter,
    TokenRecord,
    Tx,
)
from cbworkflow.store.files import JsonFileStore
from cbworkflow.store.migrations import MIGRATIONS
from cbworkflow.store.paging import encode_cursor
from cbworkflow.store.postgres import PostgresStore, engine_url
from cbworkflow.store.sqlite import SQLiteStore
from conftest import PostgresDatabase

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Backend(ABC):
    """Where a store's data lives: `open()` gives a new Store object on the same data each time."""

    @abstractmethod
    def open(self) -> Store: ...

    @abstractmethod
    def cleanup(self) -> None: ...


class SQLiteBackend(Backend):
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "store.db"

    def open(self) -> Store:
        return SQLiteStore(self.path)

    def cleanup(self) -> None:
        """The file goes with pytest's temporary folder."""


class PostgresBackend(Backend):
    def __init__(self, _tmp: Path, *, migrated: bool = False) -> None:
        self.database = PostgresDatabase(migrated=migrated)

    def open(self) -> Store:
        return PostgresStore(self.database.url, pool_size=4)

    def cleanup(self) -> None:
        self.database.drop()


class JsonFilesBackend(Backend):
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "json-store"

    def open(self) -> Store:
        return JsonFileStore(self.root)

    def cleanup(self) -> None:
        """The folder goes with pytest's temporary folder."""


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": SQLiteBackend,
    "postgresql": PostgresBackend,
    "json": JsonFilesBackend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgresql" and "store" in request.fixturenames:
        made: Backend = PostgresBackend(tmp_path, migrated=True)  # `store` migrates it at once anyway
    else:
        made = BACKENDS[request.param](tmp_path)
    yield made
    made.cleanup()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    asyncio.run(opened.migrate())
    yield opened
    asyncio.run(opened.close())


def run(store: Store, tenant: str, fn: Callable[[Tx], Any], write: bool = True) -> Any:
    async def go() -> Any:
        return await (store.write(tenant, fn) if write else store.read(tenant, fn))

    return asyncio.run(go())


def system(store: Store, fn: Callable[[SystemTx], Any], write: bool = True) -> Any:
    """Run `fn` in a transaction over every tenant."""

    async def go() -> Any:
        return await (store.system_write(fn) if write else store.system_read(fn))

    return asyncio.run(go())


def contact(tenant: str = "a", cid: str | None = None, minutes: int = 0, **fields: Any) -> Contact:
    when = T0 + timedelta(minutes=minutes)
    return Contact(
        id=cid or new_id(), tenant=tenant, name=fields.pop("name", "Pat"), created_at=when, updated_at=when, **fields
    )


def template(tenant: str = "a", tid: str = "tpl") -> WorkflowTemplate:
    return WorkflowTemplate.model_validate(
        {
            "id": tid,
            "tenant": tenant,
            "name": "T",
            "start_node": "call",
            "nodes": {
                "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
                "end": {"type": "end"},
            },
            "tags": ["outreach"],
            "created_at": T0,
            "updated_at": T0,
        }
    )


def instance(tx: Tx, contact_id: str, minutes: int = 0, **fields: Any) -> WorkflowInstance:
    tpl = template(tx.tenant)
    when = T0 + timedelta(minutes=minutes)
    inst = WorkflowInstance(
        id=new_id(),
        tenant=tx.tenant,
        contact_id=contact_id,
        template_id=tpl.id,
        template_version=tpl.version,
        start_node="call",
        status=fields.pop("status", InstanceStatus.PENDING),
        nodes=tpl.nodes,
        created_at=when,
        updated_at=when,
        **fields,
    )
    snap = snapshot_of(tx.tenant, "call", {k: v.model_dump(mode="json") for k, v in tpl.nodes.items()})
    tx.put_snapshot(snap)
    tx.insert_instance(inst, snap.id)
    return inst


def event(
    inst: WorkflowInstance | None, type_: EventType = EventType.USER_NOTE, contact_id: str | None = None
) -> Event:
    return Event(
        id=new_id(),
        type=type_,
        timestamp=T0,
        actor="tester",
        instance_id=inst.id if inst else None,
        contact_id=inst.contact_id if inst else contact_id,
        template_id=inst.template_id if inst else None,
        message="m",
    )


# ---------------------------------------------------------------------------------------------- schema
def test_migrate_is_idempotent(store: Store) -> None:
    assert asyncio.run(store.migrate()) == []


# The indexes later steps add to tables made before them, by the step that adds each.
ADDED_INDEXES = [
    ("_name_keys", "contacts", "ix_contacts_name_key"),
    ("_jobs", "instances", "ix_instances_enrolled"),
    ("_outbox", "events", "ix_events_sequence"),
    ("_triggers", "templates", "ix_templates_hooked"),
    ("_triggers", "instances", "uq_instances_enrol_key"),
    ("_held_tasks", "instances", "ix_instances_held"),
    ("_timers_due", "instances", "ix_instances_timers_due"),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_made_before_an_index_gets_it(kind: str, tmp_path: Path) -> None:
    """Each index a later step adds is created on a database whose step had not run (and only that step runs)."""
    made = BACKENDS[kind](tmp_path)
    try:
        opened = made.open()
        asyncio.run(opened.migrate())
        asyncio.run(opened.close())
        engine = create_engine(store_url(made))
        for step, table, index in ADDED_INDEXES:
            [version] = [number for number, _, fn in MIGRATIONS if fn.__name__ == step]
            with engine.begin() as conn:  # back to a database made before the step
                conn.exec_driver_sql(f"DROP INDEX {index}")
                conn.exec_driver_sql(f"DELETE FROM schema_migrations WHERE version = {version}")
            upgraded = made.open()
            try:
                assert asyncio.run(upgraded.migrate()) == [version]
            finally:
                asyncio.run(upgraded.close())
            assert index in {found["name"] for found in inspect(engine).get_indexes(table)}, (step, index)
        engine.dispose()
    finally:
        made.cleanup()


# ---------------------------------------------------------------------------------------------- tenants, tokens
def test_tenants_and_tokens(store: Store) -> None:
    def setup(stx: SystemTx) -> None:
        stx.insert_tenant(Tenant(id="a", name="A", created_at=T0))
        token = Token(id="t1", tenant="a", role=Role.ADMIN, created_at=T0)
        stx.for_tenant("a").insert_token(TokenRecord(token, "hash-1"))

    system(store, setup)
    assert system(store, lambda stx: stx.count_tenants()) == 1
    assert system(store, lambda stx: stx.get_tenant("a"), write=False) == Tenant(id="a", name="A", created_at=T0)
    assert system(store, lambda stx: stx.get_tenant("b")) is None
    found = system(store, lambda stx: stx.find_token_by_hash("hash-1"), write=False)
    assert found is not None
    assert found.token.tenant == "a"
    assert run(store, "b", lambda tx: tx.list_tokens(PageRequest())).items == []
    assert run(store, "b", lambda tx: tx.delete_token("t1")) is False
    assert run(store, "a", lambda tx: tx.get_token_record("t1")).secret_hash == "hash-1"
    assert run(store, "a", lambda tx: tx.delete_token("t1")) is True
    assert system(store, lambda stx: stx.find_token_by_hash("hash-1")) is None


def test_a_tenant_and_its_first_token_are_written_together_or_not_at_all(store: Store) -> None:
    system(store, lambda stx: stx.for_tenant("a").insert_token(TokenRecord(token_of("a", "t1"), "hash-1")))

    def tenant_then_clashing_token(stx: SystemTx) -> None:
        stx.insert_tenant(Tenant(id="b", name="B", created_at=T0))
        stx.for_tenant("b").insert_token(TokenRecord(token_of("b", "t2"), "hash-1"))  # the secret is taken

    with pytest.raises(Conflict):
        system(store, tenant_then_clashing_token)
    assert system(store, lambda stx: stx.get_tenant("b")) is None
    assert system(store, lambda stx: stx.count_tenants()) == 0


def token_of(tenant: str, token_id: str) -> Token:
    return Token(id=token_id, tenant=tenant, role=Role.ADMIN, created_at=T0)


def test_tenants_are_listed_newest_first_in_pages(store: Store) -> None:
    made = [Tenant(id=f"t{n:02d}", name=f"T{n}", created_at=T0 + timedelta(minutes=n // 2)) for n in range(7)]

    def insert_all(stx: SystemTx) -> None:
        for tenant in made:
            stx.insert_tenant(tenant)

    system(store, insert_all)
    seen: list[str] = []
    cursor = None
    while True:
        page = system(store, lambda stx, c=cursor: stx.list_tenants(PageRequest(3, c)), write=False)
        assert len(page.items) <= 3
        seen += [t.id for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [t.id for t in sorted(made, key=lambda t: (t.created_at, t.id), reverse=True)]
    with pytest.raises(InvalidInput):
        system(store, lambda stx: stx.list_tenants(PageRequest(3, "not-a-cursor")))


CROSS_TENANT = [name for name in dir(SystemTx) if not name.startswith("_") and name != "for_tenant"]


def test_a_tenant_transaction_has_no_call_that_spans_tenants(store: Store) -> None:
    """Nothing bound to one tenant can reach another: the calls over every tenant are on SystemTx alone."""
    assert {"claim_due", "next_wake", "find_token_by_hash", "list_tenants", "purge_idempotency"} <= set(CROSS_TENANT)
    for name in CROSS_TENANT:
        assert not hasattr(Tx, name), name
    for read_only in (True, False):
        held = run(store, "a", lambda tx: tx, write=not read_only)
        assert [name for name in CROSS_TENANT if hasattr(held, name)] == []
        inner = system(store, lambda stx: stx.for_tenant("a"), write=not read_only)
        assert inner.tenant == "a"
        assert [name for name in CROSS_TENANT if hasattr(inner, name)] == []


# ---------------------------------------------------------------------------------------------- contacts
def test_contact_round_trip_and_tenant_scope(store: Store) -> None:
    c = contact(email="pat@example.org", phone="(555) 201-3344", tags=["x", "y"], metadata={"k": [1, 2]})
    run(store, "a", lambda tx: tx.insert_contact(c))
    got = run(store, "a", lambda tx: tx.get_contact(c.id), write=False)
    assert got == c
    assert run(store, "b", lambda tx: tx.get_contact(c.id)) is None
    assert run(store, "b", lambda tx: tx.delete_contact(c.id)) is False
    assert run(store, "b", lambda tx: tx.list_contacts(ContactFilter(), PageRequest())).items == []


def test_same_ids_in_two_tenants(store: Store) -> None:
    run(store, "a", lambda tx: tx.insert_contact(contact("a", "same", name="In A", external_id="e1")))
    run(store, "b", lambda tx: tx.insert_contact(contact("b", "same", name="In B", external_id="e1")))
    assert run(store, "a", lambda tx: tx.get_contact("same")).name == "In A"
    assert run(store, "b", lambda tx: tx.get_contact_by_external_id("e1")).name == "In B"


def test_contact_update_and_tag_filter(store: Store) -> None:
    c = contact(tags=["a1"])
    run(store, "a", lambda tx: tx.insert_contact(c))
    changed = c.model_copy(update={"tags": ["b2", "c3"], "county": "Kent"})
    run(store, "a", lambda tx: tx.update_contact(changed))

    def ids(**where: Any) -> list[str]:
        page = run(store, "a", lambda tx: tx.list_contacts(ContactFilter(**where), PageRequest()))
        return [x.id for x in page.items]

    assert ids(tags=["a1"]) == []
    assert ids(tags=["b2", "c3"]) == [c.id]
    assert ids(tags=["b2", "zz"]) == []
    assert ids(county="Kent") == [c.id]
    assert ids(county="Kent", tags=["c3"]) == [c.id]


def test_contact_pages_are_stable_and_newest_first(store: Store) -> None:
    made = [contact(minutes=i // 3) for i in range(23)]  # ties on created_at are broken stably

    def insert_all(tx: Tx) -> None:
        for c in made:
            tx.insert_contact(c)

    run(store, "a", insert_all)
    seen: list[str] = []
    cursor = None
    while True:
        page = run(store, "a", lambda tx, c=cursor: tx.list_contacts(ContactFilter(), PageRequest(5, c)))
        seen.extend(x.id for x in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 23
    created = {c.id: c.created_at for c in made}
    assert [created[i] for i in seen] == sorted(created.values(), reverse=True)


def test_bad_cursor_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInput):
        run(store, "a", lambda tx: tx.list_contacts(ContactFilter(), PageRequest(5, "not-a-cursor")))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ada", {"ada"}),
        ("LOVE", {"ada"}),
        ("  lovelace ", {"ada"}),  # spaces around the text are trimmed on every store
        ("example.org", {"ada", "bob"}),
        ("555-201-3344", {"ada"}),
        ("5552013344", {"ada"}),
        ("(555) 201", {"ada"}),
        ("+1 555 201 3344", {"ada"}),
        ("100% s", {"pct"}),
        ("e_t", {"pct"}),
        ('"', set()),
        ("Ёлка", {"yolka"}),
        ("ёлк", {"yolka"}),
        ("020 7946 0000", {"bob"}),
        ("44 20 7946", {"bob"}),
        ("1234", {"raw"}),
        ("nobody", set()),
    ],
)
@pytest.mark.parametrize("plan", ["sampled", "rare trigrams"])
def test_search(store: Store, query: str, expected: set[str], plan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if plan == "rare trigrams":  # the sample never finds the text common: the SQL stores take the narrow plan
        monkeypatch.setattr("cbworkflow.store.search_sample.COMMON_SHARE", 2.0)
    people = [
        contact(
            cid="ada", name="Ada Lovelace", email="ada@example.org", phone="(555) 201-3344", phone_e164="+15552013344"
        ),
        contact(cid="bob", name="Bob", email="bob@example.org", phone="+44 20 7946 0000", phone_e164="+442079460000"),
        contact(cid="raw", name="Unparsed", phone="12-34"),
        contact(cid="pct", name="100% sure_thing"),
        contact(cid="yolka", name="Ёлка Иванова"),
    ]

    def insert_all(tx: Tx) -> None:
        for c in people:
            tx.insert_contact(c)

    run(store, "a", insert_all)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", "other", name="Ada Other")))
    page = run(store, "a", lambda tx: tx.search_contacts(query, PageRequest()), write=False)
    assert {c.id for c in page.items} == expected


def test_search_follows_updates_and_deletes(store: Store) -> None:
    c = contact(cid="c1", name="Grace Hopper")
    run(store, "a", lambda tx: tx.insert_contact(c))
    run(store, "a", lambda tx: tx.update_contact(c.model_copy(update={"name": "Grace Brewster"})))
    assert run(store, "a", lambda tx: tx.search_contacts("hopper", PageRequest())).items == []
    assert [x.id for x in run(store, "a", lambda tx: tx.search_contacts("brewster", PageRequest())).items] == ["c1"]
    run(store, "a", lambda tx: tx.delete_contact("c1"))
    assert run(store, "a", lambda tx: tx.search_contacts("brewster", PageRequest())).items == []


@pytest.mark.parametrize(("common", "candidates"), [(0.01, 1_000), (2.0, 1_000), (2.0, 10)])
def test_search_pages_newest_first_whichever_plan(
    store: Store, common: float, candidates: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text the sample finds common is walked newest first; any other is found by rare trigrams (PostgreSQL:
    up to a number of candidates, then the walk). Every plan gives the same pages (the JSON store has one)."""
    monkeypatch.setattr("cbworkflow.store.search_sample.COMMON_SHARE", common)
    monkeypatch.setattr("cbworkflow.store.postgres.SEARCH_CANDIDATES", candidates)
    smiths = [contact(cid=f"s{n:02d}", name=f"Pat Smith {n}", minutes=n) for n in range(23)]
    others = [contact(cid=f"o{n:02d}", name=f"Pat Jones {n}", email=f"j{n}@smith.example") for n in range(4)]

    def insert_all(tx: Tx) -> None:
        for c in smiths[:10] + others + smiths[10:]:
            tx.insert_contact(c)

    run(store, "a", insert_all)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", "b-smith", name="Pat Smith")))
    seen, cursor = [], None
    while True:
        asked = PageRequest(7, cursor)
        page = run(store, "a", lambda tx, a=asked: tx.search_contacts("SMITH", a), write=False)
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    stored = [c.id for c in smiths[:10] + others + smiths[10:]]
    assert seen == stored[::-1]
    assert run(store, "a", lambda tx: tx.search_contacts("jones 3", PageRequest()), write=False).items[0].id == "o03"


def names(page: Page[Contact]) -> list[str]:
    return [c.name for c in page.items]


def test_search_names_matches_the_start_by_name_then_age(store: Store) -> None:
    people = ["Bob", "bea", "Ada Lovelace", "BOB", "Émile", "émilie", "Ёлка", "Abe Bob", " Bo Diddley", "\U0010ffffx"]

    def insert_all(tx: Tx) -> None:
        for n, name in enumerate(people):
            tx.insert_contact(contact(cid=f"c{n}", name=name, minutes=n))

    run(store, "a", insert_all)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", "other", name="Bob Other")))

    def search(prefix: str, page: PageRequest | None = None) -> Page[Contact]:
        return run(store, "a", lambda tx: tx.search_names(prefix, page or PageRequest()), write=False)

    assert names(search("b")) == ["bea", " Bo Diddley", "Bob", "BOB"]  # by name key, then by age
    assert names(search("bo")) == [" Bo Diddley", "Bob", "BOB"]
    assert names(search("é")) == ["Émile", "émilie"]
    assert names(search("ё")) == ["Ёлка"]
    assert names(search("\U0010ffff")) == ["\U0010ffffx"]
    assert names(search("z")) == []
    first = search("b", PageRequest(limit=3))
    assert names(first) == ["bea", " Bo Diddley", "Bob"]
    assert first.next_cursor is not None
    rest = search("b", PageRequest(limit=3, cursor=first.next_cursor))
    assert names(rest) == ["BOB"]
    assert rest.next_cursor is None


def test_search_names_follows_updates_and_deletes(store: Store) -> None:
    c = contact(cid="c1", name="Grace Hopper")
    run(store, "a", lambda tx: tx.insert_contact(c))
    run(store, "a", lambda tx: tx.update_contact(c.model_copy(update={"name": "Margaret Hamilton"})))
    assert run(store, "a", lambda tx: tx.search_names("gr", PageRequest())).items == []
    assert names(run(store, "a", lambda tx: tx.search_names("ma", PageRequest()))) == ["Margaret Hamilton"]
    run(store, "a", lambda tx: tx.delete_contact("c1"))
    assert run(store, "a", lambda tx: tx.search_names("ma", PageRequest())).items == []


@pytest.mark.parametrize("cursor", ["garbage", encode_cursor(1), encode_cursor(1, "x"), encode_cursor("a", -1)])
def test_search_names_refuses_cursors_it_did_not_give(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        run(store, "a", lambda tx: tx.search_names("a", PageRequest(cursor=cursor)), write=False)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_contacts_stored_before_name_keys_get_them(kind: str, tmp_path: Path) -> None:
    """Migration 4 fills `name_key` for contacts a version without it stored, then indexes it."""
    made = BACKENDS[kind](tmp_path)
    try:
        store = made.open()
        asyncio.run(store.migrate())
        run(store, "a", lambda tx: [tx.insert_contact(contact(cid=f"c{n}", name=f"Zoë {n}")) for n in range(3)])
        asyncio.run(store.close())
        engine = create_engine(store_url(made))
        with engine.begin() as conn:  # back to what version 3 made
            conn.exec_driver_sql("DROP INDEX ix_contacts_name_key")
            conn.exec_driver_sql("ALTER TABLE contacts DROP COLUMN name_key")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 4")
        engine.dispose()
        upgraded = made.open()
        try:
            assert asyncio.run(upgraded.migrate()) == [v for v, _, _ in MIGRATIONS if v >= 4]
            assert names(run(upgraded, "a", lambda tx: tx.search_names("zo", PageRequest()))) == [
                "Zoë 0",
                "Zoë 1",
                "Zoë 2",
            ]
        finally:
            asyncio.run(upgraded.close())
    finally:
        made.cleanup()


def store_url(made: Backend) -> str:
    if isinstance(made, PostgresBackend):
        return engine_url(made.database.url)
    assert isinstance(made, SQLiteBackend)
    return f"sqlite:///{made.path}"


# ---------------------------------------------------------------------------------------------- templates
def test_templates_versions_and_tags(store: Store) -> None:
    tpl = template()
    run(store, "a", lambda tx: tx.insert_template(tpl))
    run(
        store,
        "a",
        lambda tx: tx.insert_template_version(
            TemplateVersion(template_id="tpl", version="1.0.0", template=tpl, created_at=T0)
        ),
    )
    assert run(store, "a", lambda tx: tx.get_template("tpl")) == tpl
    assert run(store, "b", lambda tx: tx.get_template("tpl")) is None
    assert [t.id for t in run(store, "a", lambda tx: tx.list_templates("outreach", PageRequest())).items] == ["tpl"]
    assert run(store, "a", lambda tx: tx.list_templates("other", PageRequest())).items == []
    newer = tpl.model_copy(update={"version": "1.1.0", "tags": ["other"]})
    run(store, "a", lambda tx: tx.update_template(newer))
    assert [t.id for t in run(store, "a", lambda tx: tx.list_templates("other", PageRequest())).items] == ["tpl"]
    versions = run(store, "a", lambda tx: tx.list_template_versions("tpl", PageRequest())).items
    assert [v.version for v in versions] == ["1.0.0"]
    assert run(store, "a", lambda tx: tx.delete_template("tpl")) is True
    assert run(store, "a", lambda tx: tx.list_template_versions("tpl", PageRequest())).items == []


# ---------------------------------------------------------------------------------------------- instances, events
def test_instance_round_trip_links_and_events(store: Store) -> None:
    c = contact(cid="c1")
    run(store, "a", lambda tx: tx.insert_contact(c))
    inst: WorkflowInstance = run(store, "a", lambda tx: instance(tx, "c1", tags=["hot"], state={"x": 1}))
    got = run(store, "a", lambda tx: tx.get_instance(inst.id))
    assert got == inst
    assert run(store, "b", lambda tx: tx.get_instance(inst.id)) is None
    assert run(store, "a", lambda tx: tx.get_contact("c1")).workflow_instance_ids == [inst.id]

    moved = inst.model_copy(update={"status": InstanceStatus.ACTIVE, "current_node": "call", "revision": 1})
    run(store, "a", lambda tx: tx.update_instance(moved))
    with pytest.raises(RuntimeError):  # a stale revision is a bug in the caller, never silently applied
        run(store, "a", lambda tx: tx.update_instance(moved))

    def by(**where: Any) -> list[str]:
        return [
            i.id for i in run(store, "a", lambda tx: tx.list_instances(InstanceFilter(**where), PageRequest())).items
        ]

    assert by(status="active") == [inst.id]
    assert by(status="pending") == []
    assert by(tags=["hot"]) == [inst.id]
    assert by(current_node="call", contact_id="c1", template_id="tpl") == [inst.id]
    assert [i.id for i in run(store, "a", lambda tx: tx.unfinished_instances_of_contact("c1"))] == [inst.id]

    run(store, "a", lambda tx: tx.append_events([event(inst) for _ in range(5)] + [event(None, contact_id="c1")]))
    page = run(store, "a", lambda tx: tx.instance_events(inst.id, PageRequest(limit=3)))
    rest = run(store, "a", lambda tx: tx.instance_events(inst.id, PageRequest(3, page.next_cursor)))
    assert len(page.items) == 3
    assert len(rest.items) == 2
    assert rest.next_cursor is None
    assert len(run(store, "a", lambda tx: tx.contact_events("c1", PageRequest())).items) == 6
    assert run(store, "b", lambda tx: tx.contact_events("c1", PageRequest())).items == []

    assert run(store, "a", lambda tx: tx.delete_instance(inst.id)) is True
    assert run(store, "a", lambda tx: tx.instance_events(inst.id, PageRequest())).items == []
    assert run(store, "a", lambda tx: tx.get_contact("c1")).workflow_instance_ids == []


def test_write_is_all_or_nothing(store: Store) -> None:
    def half(tx: Tx) -> None:
        tx.insert_contact(contact(cid="half"))
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(store, "a", half)
    assert run(store, "a", lambda tx: tx.get_contact("half")) is None


def test_concurrent_read_modify_write_loses_nothing(store: Store) -> None:
    run(store, "a", lambda tx: tx.insert_contact(contact(cid="c1")))

    def add(tag: str) -> Callable[[Tx], None]:
        def fn(tx: Tx) -> None:
            current = tx.get_contact("c1")
            assert current is not None
            tx.update_contact(current.model_copy(update={"tags": [*current.tags, tag]}))

        return fn

    async def many() -> None:
        await asyncio.gather(*(store.write("a", add(f"t{i}")) for i in range(40)))

    asyncio.run(many())
    assert sorted(run(store, "a", lambda tx: tx.get_contact("c1")).tags) == sorted(f"t{i}" for i in range(40))


# ---------------------------------------------------------------------------------------------- idempotency
def test_idempotency_keys_are_plain_records_of_one_tenant(store: Store) -> None:
    first = IdempotencyRecord("/r", "k", "tok", "h1", T0)
    assert run(store, "a", lambda tx: tx.insert_idempotency(first)) is True
    assert run(store, "a", lambda tx: tx.insert_idempotency(first)) is False  # taken, however old
    assert run(store, "b", lambda tx: tx.insert_idempotency(first)) is True  # another tenant's key
    other_route = IdempotencyRecord("/other", "k", "tok", "h1", T0 + timedelta(hours=1))
    assert run(store, "a", lambda tx: tx.insert_idempotency(other_route)) is True
    assert run(store, "a", lambda tx: tx.get_idempotency("/r", "k"), write=False) == first
    run(store, "a", lambda tx: tx.finish_idempotency("/r", "k", 201, '{"ok":1}'))
    done = run(store, "a", lambda tx: tx.get_idempotency("/r", "k"))
    assert (done.done, done.status_code, done.body, done.created_at) == (True, 201, '{"ok":1}', T0)
    assert run(store, "b", lambda tx: tx.get_idempotency("/r", "k")).done is False
    run(store, "a", lambda tx: tx.delete_idempotency("/r", "k"))
    assert run(store, "a", lambda tx: tx.get_idempotency("/r", "k")) is None
    assert run(store, "b", lambda tx: tx.get_idempotency("/r", "k")) is not None
    # Purging forgets old keys in every tenant, and only old ones.
    assert system(store, lambda stx: stx.purge_idempotency(T0 + timedelta(seconds=1))) == 1
    assert run(store, "b", lambda tx: tx.get_idempotency("/r", "k")) is None
    assert run(store, "a", lambda tx: tx.get_idempotency("/other", "k")) == other_route


def test_identical_graphs_in_two_tenants_read_back_cold(store: Store, backend: Backend) -> None:
    """Snapshots are content-addressed per tenant: a cold cache still finds each tenant's own frozen copy."""
    made = {t: run(store, t, lambda tx: instance(tx, f"c-{tx.tenant}")) for t in ("a", "b")}
    asyncio.run(store.close())
    reopened = backend.open()
    try:
        for tenant, inst in made.items():
            got = run(reopened, tenant, lambda tx, i=inst.id: tx.get_instance(i))
            assert got is not None
            assert got.nodes == inst.nodes
    finally:
        asyncio.run(reopened.close())


@pytest.mark.parametrize("tags", [["common"], ["common", "rare"], ["rare", "common"]])
def test_tag_filtered_pages_are_complete_and_newest_first(store: Store, tags: list[str]) -> None:
    """Lists filtered by tags are walked along a tag index; paging must still see every match once, in order."""
    made = [contact(minutes=i // 2, tags=["common", "rare"] if i % 3 == 0 else ["common"]) for i in range(30)]

    def insert_all(tx: Tx) -> None:
        for c in made:
            tx.insert_contact(c)

    run(store, "a", insert_all)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", tags=["common", "rare"])))
    expected = [c for c in made if set(tags) <= set(c.tags)]
    seen: list[str] = []
    cursor = None
    while True:
        page = run(store, "a", lambda tx, c=cursor: tx.list_contacts(ContactFilter(tags=tags), PageRequest(4, c)))
        seen.extend(x.id for x in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(c.id for c in expected)
    assert len(seen) == len(set(seen))
    created = {c.id: (c.created_at, i) for i, c in enumerate(made)}
    assert [created[i] for i in seen] == sorted((created[i] for i in seen), reverse=True)


def test_instances_are_counted_by_status_over_every_tenant(store: Store) -> None:
    run(store, "a", lambda tx: instance(tx, "c1"))
    run(store, "a", lambda tx: instance(tx, "c2", status=InstanceStatus.ACTIVE))
    run(store, "b", lambda tx: instance(tx, "c3", status=InstanceStatus.ACTIVE))
    assert system(store, lambda stx: stx.count_instances_by_status(), write=False) == {"pending": 1, "active": 2}


# ---------------------------------------------------------------------------------------------- the worker's due work
def test_due_work_is_claimed_once_until_its_lease_ends(store: Store) -> None:
    now = T0 + timedelta(days=1)
    made = {}
    for tenant, minutes in (("a", 1), ("b", 2), ("a", 3)):
        inst = run(store, tenant, lambda tx, m=minutes: instance(tx, f"c{m}", status=InstanceStatus.WAITING))
        due = inst.model_copy(update={"wake_at": T0 + timedelta(minutes=minutes), "revision": 1})
        run(store, tenant, lambda tx, d=due: tx.update_instance(d))
        made[inst.id] = tenant
    later = run(store, "a", lambda tx: instance(tx, "c9", status=InstanceStatus.WAITING))
    run(
        store,
        "a",
        lambda tx: tx.update_instance(later.model_copy(update={"wake_at": now + timedelta(hours=1), "revision": 1})),
    )
    paused = run(store, "a", lambda tx: instance(tx, "c8", status=InstanceStatus.PAUSED))
    run(store, "a", lambda tx: tx.update_instance(paused.model_copy(update={"wake_at": T0, "revision": 1})))

    lease = now + timedelta(minutes=5)
    first = system(store, lambda stx: stx.claim_due(now, "w1", lease, 2))
    assert [(w.tenant, w.revision) for w in first] == [("a", 1), ("b", 1)]  # earliest first, over tenants
    second = system(store, lambda stx: stx.claim_due(now, "w2", lease, 10))
    assert {w.instance_id for w in first} | {w.instance_id for w in second} == set(made)
    assert not {w.instance_id for w in first} & {w.instance_id for w in second}
    assert system(store, lambda stx: stx.claim_due(now, "w3", lease, 10)) == []  # all leased
    assert system(store, lambda stx: stx.next_wake(now)) == lease  # the first lease to run out
    # A lease that ran out is taken over; a released one is free at once; any save ends a lease.
    taken = system(store, lambda stx: stx.claim_due(lease + timedelta(seconds=1), "w3", lease + timedelta(hours=1), 10))
    assert {w.instance_id for w in taken} == set(made)
    one = taken[0]
    run(store, one.tenant, lambda tx: tx.release_work(one.instance_id, "someone-else"))  # not theirs: no effect
    assert system(store, lambda stx: stx.claim_due(lease + timedelta(seconds=2), "w4", lease, 10)) == []
    run(store, one.tenant, lambda tx: tx.release_work(one.instance_id, "w3"))
    again = system(store, lambda stx: stx.claim_due(lease + timedelta(seconds=2), "w4", lease, 10))
    assert [w.instance_id for w in again] == [one.instance_id]


def test_next_wake_is_the_earliest_due_time(store: Store) -> None:
    now = T0
    assert system(store, lambda stx: stx.next_wake(now), write=False) is None
    inst = run(store, "a", lambda tx: instance(tx, "c1", status=InstanceStatus.WAITING))
    when = T0 + timedelta(days=3)
    run(store, "a", lambda tx: tx.update_instance(inst.model_copy(update={"wake_at": when, "revision": 1})))
    assert system(store, lambda stx: stx.next_wake(now)) == when


def test_concurrent_claims_never_share_work(store: Store) -> None:
    now = T0 + timedelta(days=1)

    def many(tx: Tx) -> None:
        for n in range(30):
            inst = instance(tx, f"c{n}", status=InstanceStatus.WAITING)
            tx.update_instance(inst.model_copy(update={"wake_at": T0, "revision": 1}))

    run(store, "a", many)

    async def claim_all() -> list[list[str]]:
        async def one(worker: str) -> list[str]:
            got: list[str] = []
            while True:
                batch = await store.system_write(lambda stx: stx.claim_due(now, worker, now + timedelta(hours=1), 3))
                if not batch:
                    return got
                got += [w.instance_id for w in batch]

        return await asyncio.gather(*(one(f"w{n}") for n in range(6)))

    claimed = [i for batch in asyncio.run(claim_all()) for i in batch]
    assert len(claimed) == len(set(claimed)) == 30


# ---------------------------------------------------------------------------------------------- the work queue
def test_tasks_oldest_first_filtered_and_claimed_once(store: Store) -> None:
    now = T0 + timedelta(days=1)

    def setup(tx: Tx) -> list[str]:
        tx.insert_contact(contact(cid="kent", county="Kent", tags=["spanish"]))
        tx.insert_contact(contact(cid="devon", county="Devon"))
        ids = []
        for n, cid in enumerate(["kent", "devon", "kent"]):
            inst = instance(tx, cid, status=InstanceStatus.ACTIVE)
            task = inst.model_copy(
                update={"current_node": "call", "task_since": T0 + timedelta(minutes=10 - n), "revision": 1}
            )
            tx.update_instance(task)
            ids.append(inst.id)
        instance(tx, "kent", status=InstanceStatus.ACTIVE)  # no task
        return ids

    ids = run(store, "a", setup)
    oldest_first = list(reversed(ids))

    def tasks(**where: Any) -> list[str]:
        page = run(store, "a", lambda tx: tx.list_tasks(TaskFilter(**where), now, PageRequest()), write=False)
        return [i.id for i in page.items]

    assert tasks() == oldest_first
    assert tasks(action="phone_call") == oldest_first
    assert tasks(action="door_canvass") == []
    assert tasks(county="Kent") == [ids[2], ids[0]]
    assert tasks(tag="spanish", template_id="tpl") == [ids[2], ids[0]]
    assert run(store, "b", lambda tx: tx.list_tasks(TaskFilter(), now, PageRequest())).items == []
    page = run(store, "a", lambda tx: tx.list_tasks(TaskFilter(), now, PageRequest(limit=2)))
    rest = run(store, "a", lambda tx: tx.list_tasks(TaskFilter(), now, PageRequest(2, page.next_cursor)))
    assert [i.id for i in page.items + rest.items] == oldest_first

    def claim(tx: Tx) -> str | None:
        found = tx.next_open_task(TaskFilter(county="Kent"), now)
        if found is None:
            return None
        held = found.model_copy(
            update={"held_by": "vol", "lease_expires_at": now + timedelta(minutes=15), "revision": found.revision + 1}
        )
        tx.update_instance(held)
        return found.id

    assert [run(store, "a", claim) for _ in range(3)] == [ids[2], ids[0], None]
    assert tasks(held_by="vol") == [ids[2], ids[0]]
    assert tasks(held_by="vol") == tasks(county="Kent")
    # once the lease has run out, the task is open again
    later = now + timedelta(minutes=16)
    assert run(store, "a", lambda tx: tx.next_open_task(TaskFilter(county="Kent"), later)).id == ids[2]


def test_instances_filtered_by_what_they_wait_for(store: Store) -> None:
    inst = run(store, "a", lambda tx: instance(tx, "c1", status=InstanceStatus.WAITING))
    run(store, "a", lambda tx: tx.update_instance(inst.model_copy(update={"waiting_for": "event:rsvp", "revision": 1})))
    run(store, "a", lambda tx: instance(tx, "c1", status=InstanceStatus.WAITING))

    def waiting(name: str) -> list[str]:
        where = InstanceFilter(waiting_for=name, contact_id="c1")
        return [i.id for i in run(store, "a", lambda tx: tx.list_instances(where, PageRequest())).items]

    assert waiting("event:rsvp") == [inst.id]
    assert waiting("event:other") == []


def test_a_database_of_the_previous_version_is_brought_up_to_date(tmp_path: Path) -> None:
    """Migration 3 adds the engine's columns and indexes to a database made before them (SQLite)."""
    import sqlite3

    path = tmp_path / "old.db"
    fresh = SQLiteStore(path)
    asyncio.run(fresh.migrate())
    asyncio.run(fresh.close())
    with sqlite3.connect(path) as conn:  # back to what version 2 made (migration 12's index uses task_since)
        for index in ("ix_instances_due", "ix_instances_tasks", "ix_instances_waiting", "ix_instances_held"):
            conn.execute(f"DROP INDEX {index}")
        for column in ("task_since", "task_action", "suggestion", "worker_id", "worker_lease_until"):
            conn.execute(f"ALTER TABLE instances DROP COLUMN {column}")
        conn.execute("CREATE INDEX ix_instances_wake ON instances (status, wake_at)")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 3")
    upgraded = SQLiteStore(path)
    try:
        assert asyncio.run(upgraded.migrate()) == [v for v, _, _ in MIGRATIONS if v >= 3]
        inst = run(upgraded, "a", lambda tx: instance(tx, "c1", status=InstanceStatus.WAITING))
        due = inst.model_copy(update={"wake_at": T0, "revision": 1, "task_since": T0})
        run(upgraded, "a", lambda tx: tx.update_instance(due))
        claimed = system(upgraded, lambda stx: stx.claim_due(T0, "w", T0 + timedelta(minutes=1), 5))
        assert [w.instance_id for w in claimed] == [inst.id]
    finally:
        asyncio.run(upgraded.close())
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_instances_due", "ix_instances_tasks", "ix_instances_waiting"} <= names
    assert "ix_instances_wake" not in names


def test_search_answers_the_same_whichever_plan_for_letters_folded_to_ascii(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kelvin sign (U+212A) is a `k` to SQLite's FTS5 index but not to its `lower()`: each store answers the
    same whichever plan its sample picks, so a page never depends on the plan."""
    run(store, "a", lambda tx: tx.insert_contact(contact(cid="kelvin", name="\u212aelvin Scale")))
    run(store, "a", lambda tx: tx.insert_contact(contact(cid="plain", name="Kelvin Plain")))
    sampled = {c.id for c in run(store, "a", lambda tx: tx.search_contacts("kelvin", PageRequest())).items}
    monkeypatch.setattr("cbworkflow.store.search_sample.COMMON_SHARE", 2.0)
    monkeypatch.setattr("cbworkflow.store.search_sample.LIFETIME_S", 0.0)
    rare = {c.id for c in run(store, "a", lambda tx: tx.search_contacts("kelvin", PageRequest())).items}
    assert "plain" in sampled
    assert sampled == rare
