"""Concurrent writers: one transition wins, no tag is lost, SQLite never answers "database is locked".

Each thread has its own httpx client (its own connection); a Barrier releases them together. The last tests run a
second server process on the session server's SQLite file, so the two processes share one database.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from conftest import Server, Tenant, free_port, reference_template, start_server, stop_server

INITIAL_CALL_OUTCOMES = ["answered_interested", "answered_not_interested", "no_answer", "voicemail"]
NEXT_NODE = {
    "answered_interested": "schedule_followup",
    "answered_not_interested": "end_declined",
    "no_answer": "schedule_door",
    "voicemail": "schedule_door",
}

SHARED_TLS = ssl.create_default_context()  # shared: building one per httpx client costs ~40 ms (CA bundle load)
Outcome = tuple[int, str]  # (status, body text); status 0 = transport error


def client_at(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60, verify=SHARED_TLS)


def together(
    base_urls: list[str], token: str, requests: list[Callable[[httpx.Client], httpx.Response]]
) -> list[Outcome]:
    """Run each request in its own thread with its own client, all released at once by a Barrier.

    Request i goes to base_urls[i % len(base_urls)]. Returns (status, text) per request, in order.
    """
    barrier = threading.Barrier(len(requests))
    results: list[Outcome] = [(0, "not run")] * len(requests)

    def run(index: int) -> None:
        try:
            with client_at(base_urls[index % len(base_urls)], token) as client:
                barrier.wait(timeout=30)
                answer = requests[index](client)
                results[index] = (answer.status_code, answer.text)
        except Exception as exc:  # recorded, asserted on below
            results[index] = (0, repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request thread hung"
    return results


def statuses(results: list[Outcome]) -> list[int]:
    return sorted(status for status, _ in results)


def get_ok(client: httpx.Client, path: str, **params: Any) -> Any:
    answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def all_items(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = get_ok(client, path, limit=500, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def exits_of(tenant: Tenant, instance_id: str, node: str) -> list[dict[str, Any]]:
    timeline = all_items(tenant.admin, f"/api/instances/{instance_id}/timeline")
    return [e for e in timeline if e["type"] == "node_exited" and e["node_id"] == node]


def transition(instance_id: str, body: dict[str, Any]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post(f"/api/instances/{instance_id}/transition", json=body)


def own_graph_instance(tenant: Tenant) -> dict[str, Any]:
    """A started instance of the reference graph made unique to this test (its own frozen snapshot).

    Instances whose graph is identical to another tenant's share a content-addressed snapshot; a test about
    concurrency should not depend on that, so this one gets a graph no other test has.
    """
    body = reference_template()
    body["nodes"]["initial_call"]["metadata"] = {"unique": uuid.uuid4().hex}
    template = tenant.template(body)
    return tenant.instance(template_id=template["id"], start=True)


def add_tag(path: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post(path)


# ---------------------------------------------------------------------------------------------------- transitions
def test_twenty_simultaneous_identical_transitions_move_once(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    results = together(
        [tenant.server.base_url], tenant.admin_token, [transition(instance["id"], {"outcome": "no_answer"})] * 20
    )
    assert statuses(results) == [200] + [409] * 19, results
    for status, text in results:
        if status == 409:
            assert "detail" in text
    now = get_ok(tenant.admin, f"/api/instances/{instance['id']}")
    assert now["current_node"] == "schedule_door"
    assert now["status"] == "active"
    assert len(exits_of(tenant, instance["id"], "initial_call")) == 1
    entered = [e for e in now["timeline"] if e["type"] == "node_entered" and e["node_id"] == "schedule_door"]
    assert len(entered) == 1


def test_twenty_simultaneous_different_outcomes_move_once(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    outcomes = list(itertools.islice(itertools.cycle(INITIAL_CALL_OUTCOMES), 20))
    requests = [transition(instance["id"], {"outcome": o, "expected_node": "initial_call"}) for o in outcomes]
    results = together([tenant.server.base_url], tenant.admin_token, requests)
    assert statuses(results) == [200] + [409] * 19, results
    winner = outcomes[next(i for i, (status, _) in enumerate(results) if status == 200)]
    now = get_ok(tenant.admin, f"/api/instances/{instance['id']}")
    assert now["current_node"] == NEXT_NODE[winner]
    exits = exits_of(tenant, instance["id"], "initial_call")
    assert [e["data"]["outcome"] for e in exits] == [winner]


# ---------------------------------------------------------------------------------------------------- tags
def test_thirty_simultaneous_contact_tags_are_all_kept(tenant: Tenant) -> None:
    contact = tenant.contact(name="Many Tags")
    tags = [f"tag-{i:02d}" for i in range(30)]
    requests = [add_tag(f"/api/contacts/{contact['id']}/tags/{tag}") for tag in tags]
    results = together([tenant.server.base_url], tenant.admin_token, requests)
    assert statuses(results) == [200] * 30, results
    now = get_ok(tenant.admin, f"/api/contacts/{contact['id']}")
    assert sorted(now["tags"]) == tags
    assert len(now["tags"]) == 30
    timeline = all_items(tenant.admin, f"/api/contacts/{contact['id']}/timeline")
    added = [e for e in timeline if e["type"] == "contact_tag_added"]
    assert len(added) == 30
    assert all(e.get("instance_id") is None for e in added)


def test_thirty_simultaneous_instance_tags_are_all_kept(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    tags = [f"tag-{i:02d}" for i in range(30)]
    requests = [add_tag(f"/api/instances/{instance['id']}/tags/{tag}") for tag in tags]
    results = together([tenant.server.base_url], tenant.admin_token, requests)
    assert statuses(results) == [200] * 30, results
    now = get_ok(tenant.admin, f"/api/instances/{instance['id']}")
    assert sorted(now["tags"]) == tags
    timeline = all_items(tenant.admin, f"/api/instances/{instance['id']}/timeline")
    assert len([e for e in timeline if e["type"] == "tag_added"]) == 30
    assert now["current_node"] == "initial_call"  # tagging never moves the instance


# ---------------------------------------------------------------------------------------------------- mixed load
@pytest.mark.slow
def test_concurrent_mixed_writers_never_see_a_locked_database(tenant: Tenant) -> None:
    threads, rounds = 8, 10  # 5 writes a round: 8 x 50 writes
    shared_contact = tenant.contact(name="Shared")["id"]
    shared_instances = [tenant.instance(shared_contact, start=True)["id"] for _ in range(rounds)]
    seen: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def writer(index: int) -> None:
        log: list[tuple[str, int, str]] = []

        def record(kind: str, answer: httpx.Response) -> httpx.Response:
            log.append((kind, answer.status_code, answer.text))
            return answer

        try:
            with tenant.server.client(tenant.admin_token, verify=SHARED_TLS) as client:
                barrier.wait(timeout=30)
                for n in range(rounds):
                    made = record("create contact", client.post("/api/contacts", json={"name": f"W{index} R{n}"}))
                    own = made.json().get("id", "missing")
                    record("patch contact", client.patch(f"/api/contacts/{own}", json={"county": f"C{n}"}))
                    record("add tag", client.post(f"/api/contacts/{shared_contact}/tags/w{index}-r{n}"))
                    body = {"contact_id": own, "template_id": "county-outreach-v1", "start": True}
                    record("create instance", client.post("/api/instances", json=body))
                    move = {"outcome": "no_answer", "expected_node": "initial_call"}
                    record("transition", client.post(f"/api/instances/{shared_instances[n]}/transition", json=move))
        except Exception as exc:  # recorded, asserted on below
            log.append(("exception", 0, repr(exc)))
        with lock:
            seen.extend(log)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(writer, range(threads)))

    assert len(seen) == threads * rounds * 5, [s for s in seen if s[0] == "exception"]
    expected = {
        "create contact": {201},
        "patch contact": {200},
        "add tag": {200},
        "create instance": {201},
        "transition": {200, 409},
    }
    wrong = [(kind, status, text[:200]) for kind, status, text in seen if status not in expected.get(kind, set())]
    assert not wrong, wrong
    assert not [text for _, _, text in seen if "locked" in text.lower()]
    assert sum(1 for kind, status, _ in seen if kind == "transition" and status == 200) == rounds
    for instance_id in shared_instances:
        assert len(exits_of(tenant, instance_id, "initial_call")) == 1
    shared = get_ok(tenant.admin, f"/api/contacts/{shared_contact}")
    assert len(shared["tags"]) == threads * rounds
    assert len(all_items(tenant.admin, "/api/contacts")) == 1 + threads * rounds


# ---------------------------------------------------------------------------------------------------- two processes
@pytest.fixture(scope="module")
def second_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cbworkflow serve` in another process on the session server's store; its base URL."""
    workdir = tmp_path_factory.mktemp("second-server")
    port = free_port()
    process = start_server(
        server.data_dir, port, workdir / "server.log", workdir=workdir, database_url=server.database_url
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


@pytest.mark.slow
def test_second_process_sees_the_same_store(tenant: Tenant, second_server: str) -> None:
    contact = tenant.contact(name="Seen Twice")
    with client_at(second_server, tenant.admin_token) as other:
        assert get_ok(other, f"/api/contacts/{contact['id']}")["name"] == "Seen Twice"
        made = other.post("/api/contacts", json={"name": "Made Elsewhere"})
        assert made.status_code == 201, made.text
    assert get_ok(tenant.admin, f"/api/contacts/{made.json()['id']}")["name"] == "Made Elsewhere"


@pytest.mark.slow
def test_two_processes_adding_200_tags_lose_none(tenant: Tenant, second_server: str) -> None:
    """200 tag adds over two contacts (100 each, the most a contact may have), split across two processes."""
    contacts = [tenant.contact(name="Two Servers A"), tenant.contact(name="Two Servers B")]
    tags = [f"p-{i:03d}" for i in range(100)]
    adds = [(c["id"], tag) for c in contacts for tag in tags]
    workers = 10  # 5 threads per server, 20 adds each
    per_worker = [adds[i::workers] for i in range(workers)]

    def add_all(mine: list[tuple[str, str]]) -> Callable[[httpx.Client], httpx.Response]:
        def run(client: httpx.Client) -> httpx.Response:
            last = None
            for contact_id, tag in mine:
                last = client.post(f"/api/contacts/{contact_id}/tags/{tag}")
                if last.status_code != 200:
                    return last
            assert last is not None
            return last

        return run

    urls = [tenant.server.base_url, second_server]
    results = together(urls, tenant.admin_token, [add_all(mine) for mine in per_worker])
    assert statuses(results) == [200] * workers, results
    assert not [text for _, text in results if "locked" in text.lower()]
    for url in urls:
        with client_at(url, tenant.admin_token) as client:
            for contact in contacts:
                assert sorted(get_ok(client, f"/api/contacts/{contact['id']}")["tags"]) == tags
    for contact in contacts:
        timeline = all_items(tenant.admin, f"/api/contacts/{contact['id']}/timeline")
        assert sum(1 for e in timeline if e["type"] == "contact_tag_added") == 100


@pytest.mark.slow
def test_two_processes_racing_transitions_move_once(tenant: Tenant, second_server: str) -> None:
    instance = own_graph_instance(tenant)
    urls = [tenant.server.base_url, second_server]
    results = together(urls, tenant.admin_token, [transition(instance["id"], {"outcome": "no_answer"})] * 20)
    assert statuses(results) == [200] + [409] * 19, results
    assert not [text for _, text in results if "locked" in text.lower()]
    assert get_ok(tenant.admin, f"/api/instances/{instance['id']}")["current_node"] == "schedule_door"
    assert len(exits_of(tenant, instance["id"], "initial_call")) == 1


@pytest.mark.slow
def test_two_processes_racing_different_outcomes_move_once(tenant: Tenant, second_server: str) -> None:
    instance = own_graph_instance(tenant)
    outcomes = list(itertools.islice(itertools.cycle(INITIAL_CALL_OUTCOMES), 20))
    requests = [transition(instance["id"], {"outcome": o, "expected_node": "initial_call"}) for o in outcomes]
    results = together([tenant.server.base_url, second_server], tenant.admin_token, requests)
    assert statuses(results) == [200] + [409] * 19, results
    assert len(exits_of(tenant, instance["id"], "initial_call")) == 1


@pytest.mark.slow
def test_instance_of_a_graph_shared_with_another_tenant_is_readable_by_a_second_process(
    make_tenant: Callable[[], Tenant], second_server: str
) -> None:
    """Two tenants enrol contacts in the same graph: both instances must be readable by a process with a cold cache."""
    graph = reference_template()
    graph["nodes"]["initial_call"]["metadata"] = {"unique": uuid.uuid4().hex}
    instances = []
    for tenant in (make_tenant(), make_tenant()):
        template = tenant.template(graph)
        instances.append((tenant, tenant.instance(template_id=template["id"], start=True)))
    for tenant, instance in reversed(instances):  # the tenant that did not insert the snapshot first
        with client_at(second_server, tenant.admin_token) as other:
            answer = other.get(f"/api/instances/{instance['id']}")
            assert answer.status_code == 200, (tenant.id, answer.text)
            moved = other.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"})
            assert moved.status_code == 200, (tenant.id, moved.text)
