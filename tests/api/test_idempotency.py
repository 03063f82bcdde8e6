"""`Idempotency-Key` on POST: a repeat (same tenant, same route, same body) replays the first answer and does nothing.

Different body → 422; another route or tenant → independent; a key over 255 chars → 400; a 4xx is replayed as is;
concurrent first uses of one key act once; an unauthenticated request is answered 401 and its key is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.errors import Conflict, InvalidInput
from cbworkflow.models.access import Principal, Role
from cbworkflow.services.idempotency import IdempotencyService, Replay
from cbworkflow.store.base import Store
from cbworkflow.store.files import JsonFileStore
from cbworkflow.store.sqlite import SQLiteStore
from conftest import Tenant

REPLAYED = "idempotent-replayed"
SHARED_TLS = ssl.create_default_context()  # shared by the racing clients: one per client costs ~40 ms


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def post(client: httpx.Client, path: str, key: str, body: Any = None) -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def contact_count(tenant: Tenant) -> int:
    answer = tenant.admin.get("/api/contacts", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["items"])


def assert_replay_of(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.json() == first.json()
    assert again.headers.get(REPLAYED) == "true"
    assert again.headers["content-type"].startswith("application/json")


def test_first_response_is_not_marked_replayed(tenant: Tenant) -> None:
    first = post(tenant.admin, "/api/contacts", new_key(), {"name": "Ana"})
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers


def test_create_contact_twice_with_one_key_creates_one(tenant: Tenant) -> None:
    key = new_key()
    first = post(tenant.admin, "/api/contacts", key, {"name": "Ana", "tags": ["vip"]})
    assert first.status_code == 201, first.text
    again = post(tenant.admin, "/api/contacts", key, {"name": "Ana", "tags": ["vip"]})
    assert_replay_of(first, again)
    third = post(tenant.admin, "/api/contacts", key, {"name": "Ana", "tags": ["vip"]})
    assert_replay_of(first, third)
    assert contact_count(tenant) == 1
    timeline = tenant.admin.get(f"/api/contacts/{first.json()['id']}/timeline").json()["items"]
    assert sum(e["type"] == "contact_created" for e in timeline) == 1


def test_replay_is_the_first_answer_even_after_the_record_changed(tenant: Tenant) -> None:
    key = new_key()
    first = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert first.status_code == 201
    contact_id = first.json()["id"]
    assert tenant.admin.patch(f"/api/contacts/{contact_id}", json={"name": "Changed"}).status_code == 200
    again = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert_replay_of(first, again)
    assert again.json()["name"] == "Ana"
    assert tenant.admin.get(f"/api/contacts/{contact_id}").json()["name"] == "Changed"


def test_transition_twice_with_one_key_moves_once(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    path = f"/api/instances/{instance['id']}/transition"
    key = new_key()
    first = post(tenant.admin, path, key, {"outcome": "no_answer"})
    assert first.status_code == 200, first.text
    assert first.json()["current_node"] == "schedule_door"
    again = post(tenant.admin, path, key, {"outcome": "no_answer"})
    assert_replay_of(first, again)
    now = tenant.admin.get(f"/api/instances/{instance['id']}").json()
    assert now["current_node"] == "schedule_door"
    exits = [e for e in now["timeline"] if e["type"] == "node_exited"]
    assert [(e["node_id"], e["data"].get("outcome")) for e in exits] == [("initial_call", "no_answer")]


def test_without_a_key_a_repeat_runs_again(tenant: Tenant) -> None:
    for _ in range(2):
        answer = tenant.admin.post("/api/contacts", json={"name": "Ana"})
        assert answer.status_code == 201
        assert REPLAYED not in answer.headers
    assert contact_count(tenant) == 2


@pytest.mark.parametrize(
    "second",
    [{"name": "Bob"}, {"name": "Ana", "county": "Travis"}, {"name": "Ana", "tags": ["x"]}],
    ids=["other value", "extra field", "extra tags"],
)
def test_same_key_with_a_different_body_is_422(tenant: Tenant, second: dict[str, Any]) -> None:
    key = new_key()
    assert post(tenant.admin, "/api/contacts", key, {"name": "Ana"}).status_code == 201
    answer = post(tenant.admin, "/api/contacts", key, second)
    assert answer.status_code == 422, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert answer.headers.get(REPLAYED) != "true"
    assert contact_count(tenant) == 1


def test_same_key_on_another_route_runs_independently(tenant: Tenant) -> None:
    key = new_key()
    contact = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert contact.status_code == 201
    template = post(
        tenant.admin, "/api/workflows", key, {"name": "Other", "start_node": "a", "nodes": {"a": {"type": "end"}}}
    )
    assert template.status_code == 201, template.text
    assert REPLAYED not in template.headers
    assert template.json()["name"] == "Other"


def test_same_key_on_the_same_route_shape_with_another_id_runs_independently(tenant: Tenant) -> None:
    """The route is the path: tagging contact A and contact B with one key are two different requests."""
    a, b = tenant.contact(name="A"), tenant.contact(name="B")
    key = new_key()
    first = post(tenant.admin, f"/api/contacts/{a['id']}/tags/vip", key)
    second = post(tenant.admin, f"/api/contacts/{b['id']}/tags/vip", key)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert REPLAYED not in second.headers
    assert second.json()["id"] == b["id"]
    assert tenant.admin.get(f"/api/contacts/{b['id']}").json()["tags"] == ["vip"]


def test_same_key_in_another_tenant_is_independent(make_tenant: Callable[[], Tenant]) -> None:
    one, other = make_tenant(), make_tenant()
    key = new_key()
    first = post(one.admin, "/api/contacts", key, {"name": "Ana"})
    second = post(other.admin, "/api/contacts", key, {"name": "Ana"})
    assert first.status_code == second.status_code == 201
    assert REPLAYED not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["tenant"] == other.id
    assert contact_count(one) == 1
    assert contact_count(other) == 1
    # a different body in the other tenant is not a "different body" conflict either
    third = post(other.admin, "/api/workflows", key, {"name": "T", "start_node": "a", "nodes": {"a": {"type": "end"}}})
    assert third.status_code == 201, third.text


@pytest.mark.parametrize(("length", "status"), [(1, 201), (255, 201), (256, 400), (1000, 400)])
def test_key_length_limit(tenant: Tenant, length: int, status: int) -> None:
    key = ("k" + uuid.uuid4().hex * 40)[:length]
    answer = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert answer.status_code == status, answer.text
    assert contact_count(tenant) == (1 if status == 201 else 0)
    if status == 400:
        assert isinstance(answer.json()["detail"], str)
        assert "Idempotency-Key" in answer.json()["detail"]


def test_empty_key_is_400(tenant: Tenant) -> None:
    answer = post(tenant.admin, "/api/contacts", "", {"name": "Ana"})
    assert answer.status_code == 400, answer.text
    assert contact_count(tenant) == 0


def test_a_422_first_answer_is_replayed_as_the_same_422(tenant: Tenant) -> None:
    key = new_key()
    first = post(tenant.admin, "/api/contacts", key, {"name": ""})
    assert first.status_code == 422, first.text
    again = post(tenant.admin, "/api/contacts", key, {"name": ""})
    assert_replay_of(first, again)
    assert contact_count(tenant) == 0


def test_a_404_first_answer_is_not_kept_so_the_key_acts_once_the_record_exists(tenant: Tenant) -> None:
    """401, 403, 404, 405 and 413 are not outcomes of the request: the key is released, not bound to them."""
    key = new_key()
    path = "/api/contacts/late-comer/tags/vip"
    first = post(tenant.admin, path, key)
    assert first.status_code == 404, first.text
    tenant.contact(id="late-comer", name="Late")
    again = post(tenant.admin, path, key)
    assert again.status_code == 200, again.text
    assert "idempotent-replayed" not in again.headers
    assert tenant.admin.get("/api/contacts/late-comer").json()["tags"] == ["vip"]


def test_a_403_does_not_poison_the_key_for_a_token_that_may(tenant: Tenant) -> None:
    key = new_key()
    viewer = tenant.as_role("viewer")
    assert post(viewer, "/api/contacts", key, {"name": "Ana"}).status_code == 403
    created = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert created.status_code == 201, created.text


def test_another_token_never_gets_the_stored_answer(tenant: Tenant) -> None:
    key = new_key()
    first = post(tenant.admin, "/api/tokens", key, {"role": "admin", "name": "second admin"})
    assert first.status_code == 201, first.text
    for other in (tenant.as_role("viewer"), tenant.as_role("admin")):
        answer = post(other, "/api/tokens", key, {"role": "admin", "name": "second admin"})
        assert answer.status_code == 409, answer.text
        assert "another token" in answer.json()["detail"]
        assert first.json()["token"] not in answer.text


def test_a_replayed_token_creation_does_not_show_the_secret_again(tenant: Tenant) -> None:
    key = new_key()
    first = post(tenant.admin, "/api/tokens", key, {"role": "staff"})
    assert first.status_code == 201
    again = post(tenant.admin, "/api/tokens", key, {"role": "staff"})
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert "token" not in again.json()
    assert first.json()["token"] not in again.text
    tokens = tenant.admin.get("/api/tokens", params={"limit": 500}).json()["items"]
    assert sum(1 for t in tokens if t["role"] == "staff") == 1


def test_a_409_first_answer_is_replayed(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    path = f"/api/instances/{instance['id']}/transition"
    key = new_key()
    body = {"outcome": "no_answer", "expected_node": "schedule_door"}
    first = post(tenant.admin, path, key, body)
    assert first.status_code == 409, first.text
    assert tenant.admin.post(path, json={"outcome": "no_answer"}).status_code == 200  # now at schedule_door
    again = post(tenant.admin, path, key, body)
    assert_replay_of(first, again)
    assert tenant.admin.get(f"/api/instances/{instance['id']}").json()["current_node"] == "schedule_door"


@pytest.mark.slow
def test_concurrent_requests_with_one_new_key_create_one_contact(tenant: Tenant) -> None:
    key = new_key()
    barrier = threading.Barrier(10)
    answers: list[httpx.Response | BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with tenant.server.client(tenant.admin_token, verify=SHARED_TLS) as client:
                barrier.wait(timeout=10)
                answer: httpx.Response | BaseException = post(client, "/api/contacts", key, {"name": "Racer"})
        except BaseException as exc:  # reported below
            answer = exc
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 10
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, errors
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [(r.status_code, r.text) for r in responses]
    originals = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    replays = [r for r in responses if r.status_code == 201 and r.headers.get(REPLAYED) == "true"]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1, statuses
    assert len(originals) + len(replays) + len(conflicts) == 10
    assert {r.json()["id"] for r in replays} <= {originals[0].json()["id"]}
    for conflict in conflicts:
        assert isinstance(conflict.json()["detail"], str)
    assert contact_count(tenant) == 1
    # once the first has finished, the key replays
    assert_replay_of(originals[0], post(tenant.admin, "/api/contacts", key, {"name": "Racer"}))


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-token-0000000000", "Basic abc", "Bearer"])
def test_unauthenticated_request_with_a_key_is_401_and_not_kept(tenant: Tenant, authorization: str | None) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    if authorization is not None:
        headers["Authorization"] = authorization
    with httpx.Client(base_url=tenant.server.base_url, timeout=30) as anonymous:
        for _ in range(2):
            answer = anonymous.post("/api/contacts", json={"name": "Ana"}, headers=headers)
            assert answer.status_code == 401, answer.text
            assert REPLAYED not in answer.headers
            assert isinstance(answer.json()["detail"], str)
    # the key was not stored: the same key with a token runs for real
    real = post(tenant.admin, "/api/contacts", key, {"name": "Ana"})
    assert real.status_code == 201, real.text
    assert REPLAYED not in real.headers
    assert contact_count(tenant) == 1


def test_revoked_token_with_a_key_is_401_not_a_replay(tenant: Tenant) -> None:
    staff = tenant.token("staff")
    key = new_key()
    with tenant.server.client(staff["token"]) as client:
        first = post(client, "/api/contacts", key, {"name": "Ana"})
        assert first.status_code == 201
        assert tenant.admin.delete(f"/api/tokens/{staff['id']}").status_code == 204
        again = post(client, "/api/contacts", key, {"name": "Ana"})
    assert again.status_code == 401, again.text
    assert REPLAYED not in again.headers


def test_key_is_ignored_on_get(tenant: Tenant) -> None:
    contact = tenant.contact(name="Ana")
    key = new_key()
    first = tenant.admin.get(f"/api/contacts/{contact['id']}", headers={"Idempotency-Key": key})
    tenant.admin.patch(f"/api/contacts/{contact['id']}", json={"name": "Bea"})
    again = tenant.admin.get(f"/api/contacts/{contact['id']}", headers={"Idempotency-Key": key})
    assert first.json()["name"] == "Ana"
    assert again.json()["name"] == "Bea"
    assert REPLAYED not in again.headers


# ---------------------------------------------------------------------------------------------- the service's rules
LOCAL_STORES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SQLiteStore(tmp / "store.db"),
    "json": lambda tmp: JsonFileStore(tmp / "json-store"),
}


@contextlib.asynccontextmanager
async def service(tmp: Path, kind: str, clock: FakeClock) -> AsyncIterator[IdempotencyService]:
    """The idempotency service over a real, migrated store of `kind`."""
    store = LOCAL_STORES[kind](tmp)
    await store.migrate()
    try:
        yield IdempotencyService(store, clock)
    finally:
        await store.close()


def principal(tenant: str = "t1", token_id: str = "tok-1") -> Principal:
    return Principal(token_id=token_id, tenant=tenant, role=Role.ADMIN, name="p")


@pytest.mark.parametrize("kind", sorted(LOCAL_STORES))
def test_a_key_answers_for_24_hours_and_is_then_forgotten(tmp_path: Path, kind: str) -> None:
    clock = FakeClock()

    async def go() -> None:
        async with service(tmp_path, kind, clock) as keys:
            me = principal()
            assert await keys.begin(me, "/api/contacts", "k", "body-1") is None
            with pytest.raises(Conflict, match="still being processed"):
                await keys.begin(me, "/api/contacts", "k", "body-1")
            await keys.finish(me, "/api/contacts", "k", 201, '{"id": "c1", "token": "secret"}')
            replay = await keys.begin(me, "/api/contacts", "k", "body-1")
            assert replay == Replay(201, '{"id": "c1", "secret": "shown only in the first answer"}')
            with pytest.raises(InvalidInput, match="different request body"):
                await keys.begin(me, "/api/contacts", "k", "body-2")
            with pytest.raises(Conflict, match="another token"):
                await keys.begin(principal(token_id="tok-2"), "/api/contacts", "k", "body-1")
            assert await keys.begin(principal(tenant="t2"), "/api/contacts", "k", "body-1") is None
            clock.advance(timedelta(hours=24, seconds=1))
            assert await keys.begin(principal(token_id="tok-2"), "/api/contacts", "k", "body-2") is None

    asyncio.run(go())


@pytest.mark.parametrize("kind", sorted(LOCAL_STORES))
def test_answers_that_are_not_outcomes_release_the_key(tmp_path: Path, kind: str) -> None:
    async def go() -> None:
        async with service(tmp_path, kind, FakeClock()) as keys:
            me = principal()
            for status in (404, 503):
                assert await keys.begin(me, "/api/instances/x/transition", "k", "b") is None
                await keys.finish(me, "/api/instances/x/transition", "k", status, '{"detail": "no"}')
            assert await keys.begin(me, "/api/instances/x/transition", "k", "b") is None

    asyncio.run(go())


@pytest.mark.parametrize("kind", sorted(LOCAL_STORES))
def test_old_keys_are_purged_in_every_tenant_every_few_minutes(tmp_path: Path, kind: str) -> None:
    clock = FakeClock()

    async def go() -> None:
        async with service(tmp_path, kind, clock) as keys:
            assert await keys.purge_if_due(clock.now()) == 0
            for tenant in ("t1", "t2"):
                assert await keys.begin(principal(tenant), "/api/contacts", "old", "b") is None
            clock.advance(timedelta(hours=23))
            assert await keys.begin(principal("t1"), "/api/contacts", "new", "b") is None
            clock.advance(timedelta(hours=1, seconds=1))
            assert await keys.purge_if_due(clock.now()) == 2  # the two of the first hour, not the newer one
            assert await keys.purge_if_due(clock.now()) == 0  # not again within ten minutes
            with pytest.raises(Conflict):
                await keys.begin(principal("t1"), "/api/contacts", "new", "b")

    asyncio.run(go())
