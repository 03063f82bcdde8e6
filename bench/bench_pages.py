"""The web pages' server time at campaign scale: each page's latency p50/p95 at 100,000 contacts and 100,000
instances, against `/healthz` on the same server in the same run (the server stack's floor).

    .venv/bin/python bench/bench_pages.py [--contacts 100000] [--instances 100000] [--requests 100] [--runs 3]
        [--stores sqlite,postgresql]

Per store: a fresh store filled in batches (bench_core.py's filler: contacts with tags and counties, started
instances of the reference template), an admin who signs in with a password, the bulk load settled (PostgreSQL:
ANALYZE; SQLite: its write-ahead log checkpointed), then one `cbworkflow serve --no-worker` process. For each page,
`--requests` GETs one after another on one keep-alive connection, after 5 to warm up; each run gives p50 and p95,
and the table shows the median of `--runs` runs (min-max of the p95 beside it). Latency is measured by the client on
loopback, so it includes HTTP; `/healthz` shows what HTTP alone costs. The target (issue: the web pages) is p95 ≤ 50
ms for every page. Writes bench/results/pages-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench_core import TOKEN, fill, free_port
from cbworkflow.models.users import UserCreate
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CBWORKFLOW = Path(sys.executable).parent / "cbworkflow"
EMAIL, PASSWORD = "bench@example.org", "a bench password"


def pages(contact_id: str, instance_id: str) -> dict[str, str]:
    """What a person opens, by name: the floor first."""
    return {
        "/healthz (floor)": "/healthz",
        "dashboard /": "/",
        "next task /next": "/next",
        "contacts /contacts": "/contacts",
        "contacts, search": "/contacts?q=hopper",
        "contacts, filtered": "/contacts?county=Kent&tag=donor",
        "a contact": f"/contacts/{contact_id}",
        "workflows /workflows": "/workflows",
        "a workflow": "/workflows/county-outreach-v1",
        "instances /instances": "/instances",
        "instances, filtered": "/instances?status=active&current_node=initial_call",
        "an instance": f"/instances/{instance_id}",
        "admin /admin": "/admin",
    }


async def seed(url: str, folder: Path, contacts: int, instances: int) -> tuple[str, str]:
    settings = Settings(data_dir=folder, database_url=url, admin_token=TOKEN)
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=True)
        instance_ids = await fill(services, contacts, instances, random.Random(7))
        await services.users.create(
            None, "default", UserCreate(email=EMAIL, name="Bench Admin", role="admin", password=PASSWORD)
        )
        found = await services.instances.get(SYSTEM, instance_ids[len(instance_ids) // 2])
        return found.contact_id, found.id
    finally:
        await services.store.close()


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    done = client.post("/login", data={"csrf": token.group(1), "email": EMAIL, "password": PASSWORD})
    assert done.status_code == 303, done.text


def measure(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    for _ in range(5):
        status = client.get(path).status_code
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        status = client.get(path).status_code
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {"status": status, "p50": statistics.median(samples), "p95": samples[int(0.95 * (len(samples) - 1))]}


def one_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"cbw-pages-{kind}-"))
    database = f"cbw_pages_{secrets.token_hex(4)}" if kind == "postgresql" else None
    if database:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = re.sub(r"/[^/]*$", f"/{database}", POSTGRES)
    else:
        url = f"sqlite:///{work / 'cbworkflow.db'}"
    try:
        began = time.perf_counter()
        contact_id, instance_id = asyncio.run(seed(url, work, args.contacts, args.instances))
        filled = time.perf_counter() - began
        if database:  # fresh statistics after a bulk load (autovacuum may be off)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        else:  # the bulk load's write-ahead log folded into the database, as SQLite's checkpoints do in time
            with sqlite3.connect(work / "cbworkflow.db") as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
        env |= {"CBW_DATA_DIR": str(work), "CBW_DATABASE_URL": url, "CBW_RATE_LIMIT": "0", "CBW_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [str(CBWORKFLOW), "serve", "--no-worker", "--port", str(port)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            runs: dict[str, list[dict[str, Any]]] = {}
            with httpx.Client(base_url=base, headers={"Accept": "text/html"}, timeout=60) as client:
                sign_in(client)
                for _ in range(args.runs):
                    for name, path in pages(contact_id, instance_id).items():
                        runs.setdefault(name, []).append(measure(client, path, args.requests))
        finally:
            server.terminate()
            server.wait(timeout=30)
        table = {
            name: {
                "status": found[-1]["status"],
                "p50_ms": round(statistics.median(r["p50"] for r in found), 2),
                "p95_ms": round(statistics.median(r["p95"] for r in found), 2),
                "p95_min_max": [round(min(r["p95"] for r in found), 2), round(max(r["p95"] for r in found), 2)],
            }
            for name, found in runs.items()
        }
        return {"store": kind, "fill_s": round(filled, 1), "pages": table}
    finally:
        if database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    results = [one_store(kind, args) for kind in args.stores.split(",")]
    print(f"\n{args.contacts:,} contacts, {args.instances:,} instances; median of {args.runs} runs of {args.requests}")
    for result in results:
        print(f"\n{result['store']} (filled in {result['fill_s']} s)")
        print(f"{'page':<28} {'status':>6} {'p50 ms':>8} {'p95 ms':>8}  p95 min-max")
        for name, row in result["pages"].items():
            low, high = row["p95_min_max"]
            print(f"{name:<28} {row['status']:>6} {row['p50_ms']:>8} {row['p95_ms']:>8}  {low}-{high}")
    out = Path(__file__).parent / "results" / f"pages-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
