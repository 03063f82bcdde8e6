"""Several `cbworkflow worker` processes on one PostgreSQL database: due work runs once, and survives a kill.

- 4 worker processes, 10,000 timers due at once: every timer fires exactly once (counted in the timelines).
- A worker killed with SIGKILL while it holds work (a webhook call in flight): another worker takes the work over
  when the lease ends, and the step is applied once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

import flows
from cbworkflow.clock import FakeClock
from cbworkflow.engine import steps
from cbworkflow.models.contacts import Contact
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import CBWORKFLOW, PostgresDatabase

pytestmark = pytest.mark.slow

TIMERS = 10_000
TIMER_TEMPLATE = flows.one_timer()


def worker_process(database_url: str, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    environment |= {"CBW_DATABASE_URL": database_url, "CBW_WORKER_POLL_INTERVAL": "0.2", "CBW_LOG_LEVEL": "WARNING"}
    environment |= {f"CBW_{k.upper()}": v for k, v in settings.items()}
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(CBWORKFLOW), "worker"], env=environment, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scalar(url: str, sql: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


async def fill_timers(url: str, tmp: Path, count: int, template: dict[str, Any]) -> None:
    """`count` instances waiting at a timer that is already due (started a minute in the past)."""
    clock = FakeClock()
    settings = Settings(data_dir=tmp, database_url=url, admin_token="workers-test-token-0123456789")
    services = await build_services(settings, clock=clock)
    try:
        await bootstrap(services, load_example=False)
        made = await services.templates.create(SYSTEM, TemplateCreate.model_validate(template))
        for start in range(0, count, 1000):

            def batch(tx: Tx, first: int = start) -> None:
                for n in range(first, min(first + 1000, count)):
                    now = clock.now()
                    tx.insert_contact(
                        Contact(id=f"c{n}", tenant="default", name=f"P{n}", created_at=now, updated_at=now)
                    )
                    inst, snapshot = new_instance("default", f"c{n}", made, now)
                    tx.put_snapshot(snapshot)
                    tx.insert_instance(inst, snapshot.id)
                    step = steps.start(inst, now, "test")
                    tx.update_instance(step.instance)
                    tx.append_events(step.events)

            await services.store.write("default", batch)
    finally:
        await services.store.close()


@pytest.fixture
def database() -> Iterator[PostgresDatabase]:
    made = PostgresDatabase()
    yield made
    made.drop()


def test_4_workers_fire_10000_due_timers_exactly_once(database: PostgresDatabase, tmp_path: Path) -> None:
    asyncio.run(fill_timers(database.url, tmp_path, TIMERS, TIMER_TEMPLATE))
    workers = [worker_process(database.url, tmp_path / f"worker{n}.log") for n in range(4)]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = scalar(database.url, "SELECT count(*) FROM instances WHERE status = 'completed'")
            if done == TIMERS:
                break
            assert all(w.poll() is None for w in workers), [p.read_text()[-2000:] for p in tmp_path.glob("*.log")]
            time.sleep(0.5)
    finally:
        for proc in workers:
            stop(proc)
    assert scalar(database.url, "SELECT count(*) FROM instances WHERE status = 'completed'") == TIMERS
    fired = "SELECT count(*) FROM events WHERE type = 'wait_completed'"
    assert scalar(database.url, fired) == TIMERS
    twice = (
        "SELECT count(*) FROM (SELECT instance_id FROM events WHERE type = 'node_exited'"
        " GROUP BY instance_id HAVING count(*) <> 1) x"
    )
    assert scalar(database.url, twice) == 0
    assert scalar(database.url, "SELECT count(*) FROM instances WHERE worker_id IS NOT NULL") == 0

    # The campaign numbers, added to by four processes at once, lost and doubled nothing.
    def counted(metric: str, node: str, key: str) -> Any:
        where = f"hour = 0 AND metric = '{metric}' AND node = '{node}' AND key = '{key}'"
        return scalar(database.url, f"SELECT coalesce(sum(n), 0) FROM workflow_tallies WHERE {where}")

    assert counted("placed", "done", "completed") == TIMERS
    assert counted("placed", "hold", "waiting") == 0
    assert counted("entered", "done", "") == counted("outcome", "hold", "elapsed") == TIMERS
    assert scalar(database.url, "SELECT count(DISTINCT shard) FROM workflow_tallies") > 1


class SlowHook(BaseHTTPRequestHandler):
    """The first call hangs (its worker gets killed meanwhile); later calls answer 200 at once."""

    calls: ClassVar[list[dict[str, Any]]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        SlowHook.calls.append({"key": self.headers.get("Idempotency-Key"), "body": json.loads(self.rfile.read(length))})
        if len(SlowHook.calls) == 1:
            SlowHook.release.wait(timeout=60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def hook() -> Iterator[str]:
    SlowHook.calls = []
    SlowHook.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        SlowHook.release.set()
        server.shutdown()
        server.server_close()


def test_work_held_by_a_killed_worker_runs_once_after_its_lease(
    database: PostgresDatabase, tmp_path: Path, hook: str
) -> None:
    template = {
        "id": "hooked",
        "name": "Hooked",
        "start_node": "call",
        "nodes": {
            "call": {
                "type": "webhook",
                "webhook_url": hook,
                "webhook_body": {"who": "{contact.name}"},
                "timeout_s": 30,
                "transitions": {"success": "done", "failure": "done"},
            },
            "done": {"type": "end"},
        },
    }
    asyncio.run(fill_timers(database.url, tmp_path, 1, template))
    settings = {"outbound_allow_private": "true", "worker_lease_s": "3"}
    first = worker_process(database.url, tmp_path / "first.log", **settings)
    try:
        deadline = time.monotonic() + 60
        while not SlowHook.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert SlowHook.calls, (tmp_path / "first.log").read_text()[-2000:]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        held = scalar(database.url, "SELECT worker_id FROM instances")
        assert held is not None  # the dead worker's lease is still on the work
        second = worker_process(database.url, tmp_path / "second.log", **settings)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if scalar(database.url, "SELECT status FROM instances") == "completed":
                    break
                time.sleep(0.1)
        finally:
            stop(second)
    finally:
        stop(first)
    assert scalar(database.url, "SELECT status FROM instances") == "completed"
    assert len(SlowHook.calls) == 2  # the killed worker's call, and the one after its lease ran out
    assert SlowHook.calls[0]["key"] == SlowHook.calls[1]["key"]  # the same idempotency key: downstream can dedupe
    assert SlowHook.calls[1]["body"] == {"who": "P0"}
    assert scalar(database.url, "SELECT count(*) FROM events WHERE type = 'action_completed'") == 1
    assert scalar(database.url, "SELECT count(*) FROM events WHERE type = 'node_exited'") == 1
