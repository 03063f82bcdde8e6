"""Several `cbworkflow serve` processes on one store behave as one service: on PostgreSQL and on the JSON-file
store (SQLite's two-process case is in test_concurrency)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN, PostgresDatabase, free_port, start_server, stop_server, store_url

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["postgresql", "json"])
def two_servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    database = PostgresDatabase() if request.param == "postgresql" else None
    url = store_url(request.param, tmp_path_factory.mktemp("shared"), database)
    started = []
    urls = []
    try:
        for name in ("one", "two"):
            folder: Path = tmp_path_factory.mktemp(f"{request.param}-{name}")
            port = free_port()
            started.append(start_server(folder, port, folder / "server.log", database_url=url))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for proc in started:
            stop_server(proc)
        if database is not None:
            database.drop()


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)


def test_both_processes_see_one_store(two_servers: list[str]) -> None:
    with client(two_servers[0]) as one, client(two_servers[1]) as two:
        made = one.post("/api/contacts", json={"name": "Seen by both"})
        assert made.status_code == 201
        assert two.get(f"/api/contacts/{made.json()['id']}").status_code == 200
        assert two.get("/api/workflows/county-outreach-v1").status_code == 200  # loaded once, by whichever was first


def test_50_concurrent_transitions_across_processes_have_one_winner(two_servers: list[str]) -> None:
    with client(two_servers[0]) as one:
        contact = one.post("/api/contacts", json={"name": "Raced"}).json()
        instance = one.post(
            "/api/instances", json={"contact_id": contact["id"], "template_id": "county-outreach-v1", "start": True}
        ).json()
    barrier = threading.Barrier(50)

    def move(i: int) -> int:
        with client(two_servers[i % 2]) as http:
            barrier.wait()
            return http.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"}).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(move, range(50)))
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == 49, statuses
    with client(two_servers[1]) as two:
        events = two.get(f"/api/instances/{instance['id']}/timeline", params={"limit": 500}).json()["items"]
    assert sum(1 for e in events if e["type"] == "node_exited") == 1


def test_1000_tag_adds_split_over_two_processes_lose_none(two_servers: list[str]) -> None:
    with client(two_servers[0]) as one:
        contacts = [one.post("/api/contacts", json={"name": f"Tagged {i}"}).json()["id"] for i in range(10)]
    adds = [(contact, f"t{n}") for contact in contacts for n in range(100)]  # 100 tags: the most a contact has

    def add(worker: int) -> int:
        with client(two_servers[worker % 2]) as http:
            mine = adds[worker::16]
            return sum(http.post(f"/api/contacts/{c}/tags/{tag}").status_code == 200 for c, tag in mine)

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(add, range(16))) == 1000
    with client(two_servers[1]) as two:
        for contact in contacts:
            tags = two.get(f"/api/contacts/{contact}").json()["tags"]
            assert sorted(tags) == sorted(f"t{n}" for n in range(100))
        over = two.post(f"/api/contacts/{contacts[0]}/tags/one-too-many")
        assert over.status_code == 409
        assert "100 tags" in over.json()["detail"]
