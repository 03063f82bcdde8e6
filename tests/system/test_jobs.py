"""A bulk enrolment too large for one request becomes a job; a worker killed with SIGKILL in the middle of it
loses nothing: the next worker resumes from the last committed batch and every contact is enrolled exactly once.

Real processes on each store: `cbworkflow serve --no-worker` answers the API, `cbworkflow worker` runs the job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbworkflow.models.contacts import Contact
from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import ADMIN_TOKEN, CBWORKFLOW, PostgresDatabase, free_port, start_server, stop_server, store_url

pytestmark = pytest.mark.slow

CONTACTS = 2_000
BATCH = 25
TEMPLATE = "county-outreach-v1"


async def seed(settings: Settings, count: int) -> None:
    """The reference template and `count` contacts in county Adams, written in one transaction."""
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=True)
        now = services.clock.now()
        made = [
            Contact(
                id=f"v{i:05d}", tenant=SYSTEM.tenant, name=f"Voter {i}", county="Adams", created_at=now, updated_at=now
            )
            for i in range(count)
        ]

        def write(tx: Tx) -> None:
            for contact in made:
                tx.insert_contact(contact)

        await services.store.write(SYSTEM.tenant, write)
    finally:
        await services.store.close()


def worker(data_dir: Path, database_url: str | None, log: Path) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    environment |= {
        "CBW_DATA_DIR": str(data_dir),
        "CBW_WORKER_POLL_INTERVAL": "0.2",
        "CBW_JOB_BATCH_SIZE": str(BATCH),
        "CBW_JOB_LEASE_S": "1",
        "CBW_LOG_LEVEL": "INFO",
    }
    if database_url:
        environment["CBW_DATABASE_URL"] = database_url
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(CBWORKFLOW), "worker"], env=environment, cwd=data_dir, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen in {timeout} s; worker log:\n{log.read_text()[-3000:]}")


def shut_down(
    client: httpx.Client,
    workers: list[subprocess.Popen[bytes]],
    server: subprocess.Popen[bytes],
    database: PostgresDatabase | None,
) -> None:
    """End what a job test started: its client, any worker still running, the server, its database."""
    client.close()
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stop_server(server)
    if database is not None:
        database.drop()


def killed_and_resumed(
    client: httpx.Client,
    job_id: str,
    total: int,
    workers: list[subprocess.Popen[bytes]],
    start: Callable[[], Any],
    log: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the job in a worker, SIGKILL it a fifth of the way, then let a second one finish: the job as it was
    after the kill (still running, partly done) and at its end."""

    def read() -> dict[str, Any]:
        answer = client.get(f"/api/jobs/{job_id}")
        assert answer.status_code == 200
        found: dict[str, Any] = answer.json()
        return found

    workers.append(start())
    wait_for("a fifth of the job", lambda: read()["progress"]["done"] >= total // 5, 120, log)
    workers[-1].send_signal(signal.SIGKILL)
    workers[-1].wait()
    halfway = read()
    assert halfway["status"] == "running"
    assert 0 < halfway["progress"]["done"] < total, "the job finished before the worker was killed"
    workers.append(start())
    done = wait_for("the job's end", lambda: (found := read())["status"] != "running" and found, 180, log)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": total, "total": total}
    return halfway, done


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "json"])
def test_a_bulk_job_survives_a_killed_worker_and_enrols_everyone_once(kind: str, tmp_path: Path) -> None:
    database = PostgresDatabase() if kind == "postgresql" else None
    url = store_url(kind, tmp_path, database)
    log = tmp_path / "worker.log"
    settings = Settings(data_dir=tmp_path, database_url=url, admin_token=ADMIN_TOKEN)
    asyncio.run(seed(settings, CONTACTS))
    port = free_port()
    server = start_server(
        tmp_path, port, tmp_path / "server.log", database_url=url, env={"CBW_BULK_INLINE_LIMIT": "100"}
    )
    workers: list[subprocess.Popen[bytes]] = []
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        asked = client.post(
            "/api/instances/bulk", json={"template_id": TEMPLATE, "contacts": {"county": "Adams"}, "start": True}
        )
        assert asked.status_code == 202, asked.text
        job = asked.json()
        assert asked.headers["location"] == f"/api/jobs/{job['id']}"
        assert (job["status"], job["progress"]) == ("queued", {"done": 0, "total": CONTACTS})

        # A second job, cancelled while queued: no worker ever runs it.
        ids = [f"v{i:05d}" for i in range(150)]
        other = client.post("/api/instances/bulk", json={"template_id": TEMPLATE, "contacts": {"ids": ids}}).json()
        cancelled = client.post(f"/api/jobs/{other['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert client.post(f"/api/jobs/{other['id']}/cancel").status_code == 409

        halfway, done = killed_and_resumed(
            client, job["id"], CONTACTS, workers, lambda: worker(tmp_path, url, log), log
        )
        assert halfway["result"]["enrolled"] == halfway["progress"]["done"]  # counted with the batches
        assert done["result"] == {"enrolled": CONTACTS, "skipped": 0}

        enrolled: Counter[str] = Counter()
        cursor = None
        while True:
            params: dict[str, Any] = {"template_id": TEMPLATE, "limit": 500} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/instances", params=params).json()
            enrolled.update(i["contact_id"] for i in page["items"])
            if not (cursor := page["next_cursor"]):
                break
        assert len(enrolled) == CONTACTS
        assert set(enrolled.values()) == {1}  # no one twice, no one left out
        assert client.get(f"/api/jobs/{other['id']}").json()["status"] == "cancelled"
        listed = client.get("/api/jobs").json()["items"]
        assert [j["id"] for j in listed] == [other["id"], job["id"]]  # newest first
    finally:
        shut_down(client, workers, server, database)
