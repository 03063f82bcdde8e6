"""People who sign in to the web pages and their sessions, in the store, on every backend: records, addresses
unique in a tenant (without regard to case) but shared across tenants, the lookup by address across tenants,
tenancy, removing a person with their sessions, the purge of expired sessions; and migration 11 on a database made
before it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import test_store
from sqlalchemy import create_engine
from test_store import BACKENDS, T0, run, store_url, system

from cbworkflow.errors import Conflict
from cbworkflow.ids import new_id
from cbworkflow.models.users import SessionRecord, User, UserRecord, UserRole, UserStatus, email_key
from cbworkflow.store.base import CLASH, PageRequest, Store, Tx

store = test_store.store
backend = test_store.backend

CLASHES = re.escape(CLASH)  # the message of every clash, as `pytest.raises` matches it


def user(tenant: str = "a", email: str = "sam@example.org", minutes: int = 0, **fields: Any) -> UserRecord:
    invited = fields.pop("status", UserStatus.ACTIVE) == UserStatus.INVITED
    person = User(
        id=fields.pop("id", new_id()),
        tenant=tenant,
        email=email,
        name=fields.pop("name", "Sam Rivera"),
        role=fields.pop("role", UserRole.VOLUNTEER),
        status=UserStatus.INVITED if invited else UserStatus.ACTIVE,
        created_at=T0 + timedelta(minutes=minutes),
        invitation_expires_at=T0 + timedelta(days=7) if invited else None,
    )
    return UserRecord(
        user=person,
        password_hash=None if invited else "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        invitation_hash="ab" * 32 if invited else None,
    )


def session(person: UserRecord, hours: float = 12, **fields: Any) -> SessionRecord:
    return SessionRecord(
        id=fields.pop("id", new_id()),
        tenant=person.user.tenant,
        user_id=person.user.id,
        secret_hash="cd" * 32,
        csrf_token="csrf-" + new_id(),
        created_at=T0,
        expires_at=T0 + timedelta(hours=hours),
    )


def ids(found: list[UserRecord]) -> list[str]:
    return [record.user.id for record in found]


# ---------------------------------------------------------------------------------------------- people
def test_a_person_is_stored_found_by_address_and_changed(store: Store) -> None:
    invited = user(email="Sam.Rivera@Example.org", status=UserStatus.INVITED)
    run(store, "a", lambda tx: tx.insert_user(invited))
    assert run(store, "a", lambda tx: tx.get_user(invited.user.id), write=False) == invited
    assert run(store, "a", lambda tx: tx.get_user(invited.user.id)) == invited  # inside a write (locked) too
    by_key = run(store, "a", lambda tx: tx.get_user_by_email(email_key("  SAM.RIVERA@example.ORG ")), write=False)
    assert by_key == invited
    assert by_key.user.email == "Sam.Rivera@Example.org"  # as given
    assert run(store, "a", lambda tx: tx.get_user_by_email("sam.rivera@example.net"), write=False) is None
    assert run(store, "a", lambda tx: tx.get_user("nobody"), write=False) is None

    accepted = invited.model_copy(deep=True)
    accepted.user.status, accepted.user.invitation_expires_at = UserStatus.ACTIVE, None
    accepted.user.name, accepted.user.role = "Samantha Rivera", UserRole.STAFF
    accepted.password_hash, accepted.invitation_hash = "$argon2id$v=19$new", None
    changed = accepted.model_copy(deep=True)
    changed.user.email = "someone.else@example.org"  # the address never changes
    run(store, "a", lambda tx: tx.update_user(changed))
    assert run(store, "a", lambda tx: tx.get_user(invited.user.id), write=False) == accepted
    assert run(store, "a", lambda tx: tx.get_user_by_email("sam.rivera@example.org"), write=False) == accepted
    assert run(store, "a", lambda tx: tx.get_user_by_email("someone.else@example.org"), write=False) is None
    with pytest.raises(RuntimeError):
        run(store, "a", lambda tx: tx.update_user(user(email="ghost@example.org")))


def test_a_change_of_a_person_waits_for_another_in_flight(store: Store) -> None:
    """`get_user` in a write holds the person (PostgreSQL: FOR UPDATE), so a second read-modify-write reads the
    first one's result instead of overwriting it."""
    sam = user(name="Sam")
    run(store, "a", lambda tx: tx.insert_user(sam))
    held = threading.Event()

    def rename(tx: Tx, suffix: str, hold: bool) -> str:
        found = tx.get_user(sam.user.id)
        assert found is not None
        if hold:
            held.set()
            time.sleep(0.3)  # the other change starts meanwhile, and must wait
        read = found.user.name
        found.user.name = read + suffix
        tx.update_user(found)
        return read

    async def go() -> list[str]:
        first = asyncio.ensure_future(store.write("a", lambda tx: rename(tx, " A", True)))
        await asyncio.get_running_loop().run_in_executor(None, held.wait)
        second = await store.write("a", lambda tx: rename(tx, " B", False))
        return [await first, second]

    assert asyncio.run(go()) == ["Sam", "Sam A"]
    assert run(store, "a", lambda tx: tx.get_user(sam.user.id), write=False).user.name == "Sam A B"


def test_people_are_listed_newest_first_in_pages(store: Store) -> None:
    made = [user(email=f"p{n}@example.org", minutes=n // 2) for n in range(7)]  # pairs share a time
    run(store, "a", lambda tx: [tx.insert_user(record) for record in made])
    run(store, "b", lambda tx: tx.insert_user(user("b", email="other@example.org", minutes=99)))
    seen: list[str] = []
    cursor = None
    while True:
        page = run(store, "a", lambda tx, at=cursor: tx.list_users(PageRequest(limit=3, cursor=at)), write=False)
        assert len(page.items) <= 3
        assert all(isinstance(found, User) for found in page.items)
        seen += [found.id for found in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [record.user.id for record in reversed(made)]
    assert run(store, "a", lambda tx: tx.list_users(PageRequest(limit=50)), write=False).next_cursor is None


def test_an_address_is_one_persons_in_a_tenant(store: Store) -> None:
    first = user(email="sam@example.org")
    run(store, "a", lambda tx: tx.insert_user(first))
    with pytest.raises(Conflict, match=CLASHES):
        run(store, "a", lambda tx: tx.insert_user(user(email=" SAM@Example.org")))
    with pytest.raises(Conflict, match=CLASHES):
        run(store, "a", lambda tx: tx.insert_user(user(email="new@example.org", id=first.user.id)))

    def clash_then_go_on(tx: Tx) -> None:  # the clash is raised by the insert; the transaction goes on
        with pytest.raises(Conflict, match=CLASHES):
            tx.insert_user(user(email="Sam@example.org"))
        tx.insert_user(user(email="kim@example.org", id="kim"))

    run(store, "a", clash_then_go_on)
    assert run(store, "a", lambda tx: tx.get_user("kim"), write=False) is not None
    listed = run(store, "a", lambda tx: tx.list_users(PageRequest()), write=False).items
    assert sorted(found.email for found in listed) == ["kim@example.org", "sam@example.org"]


def test_an_address_may_serve_several_tenants(store: Store) -> None:
    in_a, in_b, in_c = user("a", minutes=5), user("b", "SAM@example.org", minutes=1), user("c", minutes=3)
    for record in (in_a, in_b, in_c):
        run(store, record.user.tenant, lambda tx, record=record: tx.insert_user(record))
    run(store, "a", lambda tx: tx.insert_user(user("a", email="kim@example.org")))
    found = system(store, lambda stx: stx.find_users_by_email("sam@example.org", 10), write=False)
    assert ids(found) == [in_b.user.id, in_c.user.id, in_a.user.id]  # oldest first
    assert found[0] == in_b
    assert found[0].user.tenant == "b"
    assert ids(system(store, lambda stx: stx.find_users_by_email("sam@example.org", 2), write=False)) == ids(found[:2])
    assert system(store, lambda stx: stx.find_users_by_email("nobody@example.org", 10), write=False) == []
    run(store, "c", lambda tx: tx.delete_user(in_c.user.id))
    assert ids(system(store, lambda stx: stx.find_users_by_email("sam@example.org", 10))) == [
        in_b.user.id,
        in_a.user.id,
    ]


def test_removing_a_person_removes_their_sessions(store: Store) -> None:
    sam, kim = user(email="sam@example.org"), user(email="kim@example.org")
    sams = [session(sam), session(sam, hours=1)]
    kims = session(kim)

    def setup(tx: Tx) -> None:
        tx.insert_user(sam)
        tx.insert_user(kim)
        for made in (*sams, kims):
            tx.insert_session(made)

    run(store, "a", setup)
    assert run(store, "a", lambda tx: tx.delete_user(sam.user.id)) is True
    assert run(store, "a", lambda tx: tx.delete_user(sam.user.id)) is False
    assert run(store, "a", lambda tx: tx.get_user(sam.user.id), write=False) is None
    assert run(store, "a", lambda tx: tx.get_user_by_email("sam@example.org"), write=False) is None
    assert [run(store, "a", lambda tx, s=s: tx.get_session(s.id), write=False) for s in sams] == [None, None]
    assert run(store, "a", lambda tx: tx.get_session(kims.id), write=False) == kims
    assert system(store, lambda stx: stx.find_users_by_email("sam@example.org", 10), write=False) == []
    again = user(email="Sam@example.org")  # the address is free again
    run(store, "a", lambda tx: tx.insert_user(again))
    assert run(store, "a", lambda tx: tx.get_user_by_email("sam@example.org"), write=False) == again


def test_a_tenant_never_reaches_anothers_people_or_sessions(store: Store) -> None:
    sam = user("a")
    signed_in = session(sam)
    run(store, "a", lambda tx: (tx.insert_user(sam), tx.insert_session(signed_in)))
    assert run(store, "b", lambda tx: tx.get_user(sam.user.id)) is None
    assert run(store, "b", lambda tx: tx.get_user_by_email("sam@example.org")) is None
    assert run(store, "b", lambda tx: tx.list_users(PageRequest()), write=False).items == []
    assert run(store, "b", lambda tx: tx.get_session(signed_in.id)) is None
    assert run(store, "b", lambda tx: tx.delete_session(signed_in.id)) is False
    assert run(store, "b", lambda tx: tx.delete_user(sam.user.id)) is False
    with pytest.raises(RuntimeError):
        run(store, "b", lambda tx: tx.update_user(sam))
    run(store, "b", lambda tx: tx.update_session(signed_in.model_copy(update={"expires_at": T0})))  # not b's
    run(store, "b", lambda tx: tx.insert_user(user("b", id=sam.user.id)))  # ids and addresses are per tenant
    assert run(store, "a", lambda tx: tx.get_user(sam.user.id), write=False) == sam
    assert run(store, "a", lambda tx: tx.get_session(signed_in.id), write=False) == signed_in


def test_sessions_are_stored_kept_alive_and_ended(store: Store) -> None:
    sam = user()
    signed_in = session(sam)
    run(store, "a", lambda tx: (tx.insert_user(sam), tx.insert_session(signed_in)))
    assert run(store, "a", lambda tx: tx.get_session(signed_in.id), write=False) == signed_in
    with pytest.raises(Conflict, match=CLASHES):
        run(store, "a", lambda tx: tx.insert_session(session(sam, id=signed_in.id)))
    kept = signed_in.model_copy(update={"expires_at": T0 + timedelta(days=3)})
    run(store, "a", lambda tx: tx.update_session(kept.model_copy(update={"user_id": "someone", "created_at": T0})))
    assert run(store, "a", lambda tx: tx.get_session(signed_in.id)) == kept  # its person stays
    assert run(store, "a", lambda tx: tx.delete_session(signed_in.id)) is True
    assert run(store, "a", lambda tx: tx.delete_session(signed_in.id)) is False
    assert run(store, "a", lambda tx: tx.get_session(signed_in.id), write=False) is None
    run(store, "a", lambda tx: tx.update_session(kept))  # a request still holding it: it stays ended
    assert run(store, "a", lambda tx: tx.get_session(signed_in.id), write=False) is None
    assert run(store, "a", lambda tx: tx.get_user(sam.user.id), write=False) == sam  # the person stays


def test_the_purge_forgets_only_expired_sessions(store: Store) -> None:
    sam, kim = user("a"), user("b")
    a_sessions = [session(sam, hours=-1), session(sam, hours=0), session(sam, hours=1)]
    b_sessions = [session(kim, hours=-48), session(kim, hours=24)]
    run(store, "a", lambda tx: (tx.insert_user(sam), [tx.insert_session(s) for s in a_sessions]))
    run(store, "b", lambda tx: (tx.insert_user(kim), [tx.insert_session(s) for s in b_sessions]))
    assert system(store, lambda stx: stx.purge_sessions(T0)) == 2  # expiring exactly now is not before now
    assert system(store, lambda stx: stx.purge_sessions(T0)) == 0

    def left(tenant: str, made: list[SessionRecord]) -> list[bool]:
        return [run(store, tenant, lambda tx, s=s: tx.get_session(s.id), write=False) is not None for s in made]

    assert left("a", a_sessions) == [False, True, True]
    assert left("b", b_sessions) == [False, True]
    assert system(store, lambda stx: stx.purge_sessions(T0 + timedelta(days=2))) == 3


# ---------------------------------------------------------------------------------------------- migration 11
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_of_version_10_gets_people_and_sessions(kind: str, tmp_path: Path) -> None:
    made = BACKENDS[kind](tmp_path)
    try:
        opened = made.open()
        assert 11 in asyncio.run(opened.migrate())  # a fresh database: step 1 made the tables, 11 finds them
        run(opened, "a", lambda tx: tx.insert_user(user()))
        asyncio.run(opened.close())
        engine = create_engine(store_url(made))
        with engine.begin() as conn:  # back to what version 10 made
            conn.exec_driver_sql("DROP TABLE sessions")
            conn.exec_driver_sql("DROP TABLE users")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = 11")
        engine.dispose()
        upgraded = made.open()
        try:
            assert asyncio.run(upgraded.migrate()) == [11]
            assert asyncio.run(upgraded.migrate()) == []
            sam = user()
            run(upgraded, "a", lambda tx: (tx.insert_user(sam), tx.insert_session(session(sam, hours=-1))))
            with pytest.raises(Conflict, match=CLASHES):
                run(upgraded, "a", lambda tx: tx.insert_user(user(email="SAM@example.org")))
            assert ids(system(upgraded, lambda stx: stx.find_users_by_email("sam@example.org", 5))) == [sam.user.id]
            assert system(upgraded, lambda stx: stx.purge_sessions(T0)) == 1
        finally:
            asyncio.run(upgraded.close())
    finally:
        made.cleanup()
