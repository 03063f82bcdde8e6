"""A contacts import with more rows than one request takes becomes a job; its rows are staged in the store, so a
worker on any machine runs it, and a worker killed with SIGKILL in the middle loses nothing: the next one resumes
from the last committed batch and every row is imported exactly once.

Real processes on each store: `cbworkflow serve --no-worker` answers the API, `cbworkflow worker` runs the job.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest
from test_jobs import BATCH, killed_and_resumed, seed, shut_down, worker

from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import SYSTEM, build_services
from conftest import ADMIN_TOKEN, PostgresDatabase, free_port, start_server, store_url

pytestmark = pytest.mark.slow

ROWS = 1_500
EXISTING = 20  # contacts v00000.. seeded before: the file updates them by id
BAD = range(27, ROWS, 100)  # rows with a bad email (none of the existing contacts)


def voter_file() -> str:
    lines = ["id,name,email,county,precinct"]
    for i in range(ROWS):
        contact_id = f"v{i:05d}" if i < EXISTING else ""
        email = "not-an-email" if i in BAD else f"voter{i}@example.org"
        lines.append(f"{contact_id},Voter {i},{email},Adams,{i % 40}")
    return "\n".join(lines) + "\n"


def staged_chunks(settings: Settings, job_id: str) -> list[int]:
    async def run() -> list[int]:
        services = await build_services(settings)
        try:

            def look(tx: Tx) -> list[int]:
                return [seq for seq in range(ROWS // BATCH + 2) if tx.job_rows(job_id, seq) is not None]

            return await services.store.read(SYSTEM.tenant, look)
        finally:
            await services.store.close()

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "json"])
def test_an_import_job_survives_a_killed_worker_and_imports_every_row_once(kind: str, tmp_path: Path) -> None:
    database = PostgresDatabase() if kind == "postgresql" else None
    url = store_url(kind, tmp_path, database)
    log = tmp_path / "worker.log"
    settings = Settings(data_dir=tmp_path, database_url=url, admin_token=ADMIN_TOKEN)
    asyncio.run(seed(settings, EXISTING))
    port = free_port()
    env = {"CBW_IMPORT_INLINE_LIMIT": "100", "CBW_JOB_BATCH_SIZE": str(BATCH)}
    server = start_server(tmp_path, port, tmp_path / "server.log", database_url=url, env=env)
    workers: list[subprocess.Popen[bytes]] = []
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    )
    body = voter_file().encode()
    try:
        asked = client.post("/api/contacts/import", content=body, headers={"Content-Type": "text/csv"})
        assert asked.status_code == 202, asked.text
        job = asked.json()
        assert asked.headers["location"] == f"/api/jobs/{job['id']}"
        assert (job["kind"], job["status"], job["progress"]) == (
            "contacts_import",
            "queued",
            {"done": 0, "total": ROWS},
        )
        assert staged_chunks(settings, job["id"]) == list(range(ROWS // BATCH))  # in the store, not on a disk

        # A second one, cancelled while queued: its staged rows go at once.
        other = client.post("/api/contacts/import", content=body, headers={"Content-Type": "text/csv"}).json()
        assert client.post(f"/api/jobs/{other['id']}/cancel").json()["status"] == "cancelled"
        assert staged_chunks(settings, other["id"]) == []

        halfway, done = killed_and_resumed(client, job["id"], ROWS, workers, lambda: worker(tmp_path, url, log), log)
        so_far = halfway["result"]
        assert so_far["created"] + so_far["updated"] + so_far["rejected"] == halfway["progress"]["done"]
        result = done["result"]
        assert (result["created"], result["updated"], result["unchanged"], result["rejected"]) == (
            ROWS - EXISTING - len(BAD),
            EXISTING,
            0,
            len(BAD),
        )
        assert [r["line"] for r in result["rejections"]] == [i + 2 for i in BAD]  # the header is line 1
        assert len(result["rows"]) == 1_000
        assert result["rows_truncated"] is True
        assert staged_chunks(settings, job["id"]) == []

        names: list[str] = []
        cursor = None
        while True:
            page = client.get("/api/contacts", params={"limit": 500} | ({"cursor": cursor} if cursor else {})).json()
            names += [c["name"] for c in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert len(names) == len(set(names)) == ROWS - len(BAD)  # no one twice, no one left out
        exported = client.get("/api/contacts/export", params={"format": "jsonl"}).text.splitlines()
        assert len(exported) == ROWS - len(BAD)
    finally:
        shut_down(client, workers, server, database)
