"""SIGKILL under write load loses nothing that was acknowledged and leaves a sound store, on every store.

One scenario per store: `cbworkflow serve` runs as a subprocess on a fresh store; 4 threads create contacts
and 4 threads enrol contacts and record an outcome, each keeping what the server acknowledged; after ~1.5 s the
server gets SIGKILL; the store is checked (SQLite: `PRAGMA integrity_check`; PostgreSQL: `amcheck` on every
B-tree index; JSON files: every file parses); a new server starts on the same store, and the tests check that
every acknowledged write is there.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PostgresDatabase, free_port, reference_template, start_server, stop_server, store_url

pytestmark = pytest.mark.slow

TOKEN = "crash-test-superadmin-token-0123456789"
TEMPLATE = "county-outreach-v1"  # loaded into tenant `default` on the first start
LOAD_SECONDS = 1.5  # at least this long under load before the kill
LOAD_LIMIT_S = 20.0  # and longer on a slow machine, until the load has done enough to mean something
SHARED_TLS = ssl.create_default_context()


class ServerProcess:
    """`cbworkflow serve` on a data dir, in its own process."""

    def __init__(self, data_dir: Path, workdir: Path, name: str, database_url: str | None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.process = start_server(
            data_dir, self.port, self.log, workdir=workdir, admin_token=TOKEN, database_url=database_url
        )

    def client(self, token: str = TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=SHARED_TLS
        )

    def sigkill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_server(self.process)


@dataclass
class Scenario:
    after: ServerProcess
    other_tenant: str
    other_token: str
    contacts: list[tuple[str, str]] = field(default_factory=list)  # (id, name) of every 201
    instances: dict[str, list[str]] = field(default_factory=dict)  # tenant -> every instance whose create got 201
    moved: dict[str, list[str]] = field(default_factory=dict)  # tenant -> instances whose transition got 200
    integrity: list[tuple[Any, ...]] = field(default_factory=list)
    read_back: dict[str, tuple[int, Any]] = field(default_factory=dict)  # instance id -> (status, body) after restart
    errors: dict[str, list[str]] = field(default_factory=dict)  # "contacts" or a tenant -> unexpected answers
    killed_with: int | None = None
    progress: dict[str, int] = field(default_factory=dict)  # answers acknowledged so far: "contacts" or a tenant

    def count(self, what: str, lock: Any) -> None:
        with lock:
            self.progress[what] = self.progress.get(what, 0) + 1

    def enough_load(self, lock: Any) -> bool:
        """What the test below asks of the load before the kill (the counts of answers acknowledged so far)."""
        with lock:
            return self.progress.get("contacts", 0) >= 20 and self.progress.get("default", 0) >= 3


def create_contacts(server: ServerProcess, index: int, stop: threading.Event, scenario: Scenario, lock: Any) -> None:
    acked: list[tuple[str, str]] = []
    try:
        with server.client() as client:
            n = 0
            while not stop.is_set():
                name = f"Crash {index}-{n}"
                n += 1
                answer = client.post("/api/contacts", json={"name": name})
                if answer.status_code != 201:
                    raise AssertionError(f"{answer.status_code} {answer.text[:200]}")
                acked.append((answer.json()["id"], name))
                scenario.count("contacts", lock)
    except httpx.HTTPError:
        pass  # the server was killed under us
    except Exception as exc:
        with lock:
            scenario.errors.setdefault("contacts", []).append(f"thread {index}: {exc!r}")
    with lock:
        scenario.contacts.extend(acked)


def enrol_and_move(
    server: ServerProcess, tenant: str, token: str, stop: threading.Event, scenario: Scenario, lock: Any
) -> None:
    created: list[str] = []
    moved: list[str] = []
    try:
        with server.client(token) as client:
            n = 0
            while not stop.is_set():
                contact = client.post("/api/contacts", json={"name": f"Enrolled {n}"})
                n += 1
                if contact.status_code != 201:
                    raise AssertionError(f"{contact.status_code} {contact.text[:200]}")
                body = {"contact_id": contact.json()["id"], "template_id": TEMPLATE, "start": True}
                instance = client.post("/api/instances", json=body)
                if instance.status_code != 201:
                    raise AssertionError(f"{instance.status_code} {instance.text[:200]}")
                created.append(instance.json()["id"])
                move = client.post(f"/api/instances/{created[-1]}/transition", json={"outcome": "no_answer"})
                if move.status_code != 200:
                    raise AssertionError(f"{move.status_code} {move.text[:200]}")
                moved.append(created[-1])
                scenario.count(tenant, lock)
    except httpx.HTTPError:
        pass
    except Exception as exc:
        with lock:
            scenario.errors.setdefault(tenant, []).append(repr(exc))
    with lock:
        scenario.instances.setdefault(tenant, []).extend(created)
        scenario.moved.setdefault(tenant, []).extend(moved)


def json_files_check(root: Path) -> list[tuple[Any, ...]]:
    """Every JSON file of the file store parses; a commit cut short may leave a journal (replayed on restart)."""
    bad = []
    checked = 0
    for path in root.rglob("*.json"):
        checked += 1
        try:
            json.loads(path.read_bytes())
        except ValueError as exc:
            bad.append((str(path.relative_to(root)), str(exc)))
    if bad:
        return bad
    return [("ok",)] if checked > 20 else [("too few files checked", checked)]


def store_check(kind: str, data_dir: Path, database: PostgresDatabase | None) -> list[tuple[Any, ...]]:
    """[("ok",)] when the store's structures are sound after the kill."""
    if kind == "json":
        return json_files_check(data_dir / "json-store")
    if database is None:
        connection = sqlite3.connect(data_dir / "cbworkflow.db")
        try:
            return connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        checked = conn.execute(
            "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.amname = 'btree' AND n.nspname = 'public'"
        ).fetchone()
    return [("ok",)] if checked and checked[0] > 10 else [("no indexes checked", checked)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "json"])
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp(f"crash-{request.param}")
    data_dir = workdir / "data"
    database = PostgresDatabase() if request.param == "postgresql" else None
    url = store_url(request.param, data_dir, database)
    before = ServerProcess(data_dir, workdir, "before", url)
    after: ServerProcess | None = None
    try:
        with before.client() as root:
            made = root.post("/api/tenants", json={"name": "Second tenant"})
            assert made.status_code == 201, made.text
            other_tenant, other_token = made.json()["id"], made.json()["admin_token"]
            # an instance in `default` first, so the other tenant's identical graph comes second
            first = root.post("/api/contacts", json={"name": "First"}).json()["id"]
            first_instance = root.post("/api/instances", json={"contact_id": first, "template_id": TEMPLATE})
            assert first_instance.status_code == 201, first_instance.text
        with before.client(other_token) as other:
            loaded = other.post("/api/workflows", json=reference_template())
            assert loaded.status_code == 201, loaded.text

        result = Scenario(after=before, other_tenant=other_tenant, other_token=other_token)
        stop, lock = threading.Event(), threading.Lock()
        threads = [threading.Thread(target=create_contacts, args=(before, i, stop, result, lock)) for i in range(4)]
        for tenant, token in [("default", TOKEN)] * 2 + [(other_tenant, other_token)] * 2:
            threads.append(threading.Thread(target=enrol_and_move, args=(before, tenant, token, stop, result, lock)))
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS)
        deadline = time.monotonic() + LOAD_LIMIT_S
        while time.monotonic() < deadline and not result.enough_load(lock):
            time.sleep(0.1)
        before.sigkill()
        result.killed_with = before.process.returncode
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads)

        result.integrity = store_check(request.param, data_dir, database)
        after = ServerProcess(data_dir, workdir, "after", url)
        result.after = after
        # Read the instances back before anything else warms the new process's caches; the second tenant first.
        for tenant, token in ((other_tenant, other_token), ("default", TOKEN)):
            with after.client(token) as client:
                for instance_id in result.instances.get(tenant, []):
                    try:
                        answer = client.get(f"/api/instances/{instance_id}")
                    except httpx.HTTPError as exc:  # e.g. the connection closed after a 500
                        result.read_back[instance_id] = (0, repr(exc))
                        continue
                    body = answer.json() if answer.status_code == 200 else answer.text[:200]
                    result.read_back[instance_id] = (answer.status_code, body)
        yield result
    finally:
        before.stop()
        if after is not None:
            after.stop()
        if database is not None:
            database.drop()


def test_the_server_was_killed_under_load(scenario: Scenario) -> None:
    assert scenario.killed_with == -signal.SIGKILL
    assert not scenario.errors.get("contacts"), scenario.errors
    assert not scenario.errors.get("default"), scenario.errors
    assert len(scenario.contacts) >= 20, "too little load to mean anything"
    assert len(scenario.moved.get("default", [])) >= 3


def test_store_passes_its_integrity_check_after_sigkill(scenario: Scenario) -> None:
    assert scenario.integrity == [("ok",)]


def test_every_acknowledged_contact_is_readable_after_restart(scenario: Scenario) -> None:
    def check(batch: list[tuple[str, str]]) -> list[str]:
        wrong = []
        with scenario.after.client() as client:
            for contact_id, name in batch:
                answer = client.get(f"/api/contacts/{contact_id}")
                if answer.status_code != 200 or answer.json()["name"] != name:
                    wrong.append(f"{contact_id}: {answer.status_code} {answer.text[:100]}")
        return wrong

    batches = [scenario.contacts[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        missing = [w for found in pool.map(check, batches) for w in found]
    assert not missing, missing[:10]


def test_contact_list_holds_at_least_the_acknowledged(scenario: Scenario) -> None:
    listed: set[str] = set()
    with scenario.after.client() as client:
        cursor = None
        while True:
            page = client.get("/api/contacts", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            listed.update(c["id"] for c in page.json()["items"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    acknowledged = {contact_id for contact_id, _ in scenario.contacts}
    assert len(listed) >= len(acknowledged)
    assert acknowledged <= listed


def _check_instances(scenario: Scenario, tenant: str) -> list[str]:
    """Problems with the tenant's acknowledged instances: missing, or a step half-applied."""
    moved = set(scenario.moved.get(tenant, []))
    problems = []
    for instance_id in scenario.instances.get(tenant, []):
        status, instance = scenario.read_back[instance_id]
        if status != 200:
            problems.append(f"{instance_id}: {status} {instance}")
            continue
        timeline = instance["timeline"]
        exits = [e for e in timeline if e["type"] == "node_exited" and e["node_id"] == "initial_call"]
        entered_door = [e for e in timeline if e["type"] == "node_entered" and e["node_id"] == "schedule_door"]
        if instance_id in moved:
            if instance["current_node"] != "schedule_door" or [e["data"]["outcome"] for e in exits] != ["no_answer"]:
                problems.append(f"{instance_id}: acknowledged transition lost: {instance['current_node']}")
        # whatever was acknowledged, the instance is whole: either before the step or after all of it
        if instance["current_node"] == "initial_call":
            if exits or entered_door:
                problems.append(f"{instance_id}: events of a step that did not happen")
        elif instance["current_node"] == "schedule_door":
            if len(exits) != 1 or len(entered_door) != 1:
                problems.append(f"{instance_id}: moved without exactly one exit/entry event")
        else:
            problems.append(f"{instance_id}: unexpected node {instance['current_node']}")
    return problems


def test_acknowledged_transitions_are_in_the_timeline_after_restart(scenario: Scenario) -> None:
    problems = _check_instances(scenario, "default")
    assert not problems, problems[:10]


def test_acknowledged_transitions_of_a_second_tenant_survive_restart(scenario: Scenario) -> None:
    """Same graph as tenant `default` (the reference template): its instances must read back after a restart too."""
    assert not scenario.errors.get(scenario.other_tenant), scenario.errors  # answers during the load
    assert len(scenario.moved.get(scenario.other_tenant, [])) >= 3
    problems = _check_instances(scenario, scenario.other_tenant)
    assert not problems, problems[:10]


def test_restarted_server_takes_writes(scenario: Scenario) -> None:
    with scenario.after.client() as client:
        made = client.post("/api/contacts", json={"name": "After the crash"})
        assert made.status_code == 201, made.text
        assert client.get(f"/api/contacts/{made.json()['id']}").status_code == 200
