"""Benchmark of the service core on the embedded SQLite store.

    .venv/bin/python bench/bench_core.py [--contacts 100000] [--instances 100000] [--runs 3]

Fills a fresh store with N contacts and N instances, then measures (median of --runs runs each):
- contact creation/s through the service (one transaction per contact, as a POST does), and the same writes
  done with raw sqlite3 into the same schema, in the same run (the baseline);
- transitions/s through the service in-process, and over HTTP against `cbworkflow serve` in a subprocess
  (8 concurrent clients), beside a bare FastAPI app answering a trivial POST on the same HTTP client;
- contact search latency p50/p95 over a mix of name, email and phone queries.
Prints a table and writes bench/results/core-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
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

from cbworkflow.clock import Clock
from cbworkflow.engine import steps
from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact, ContactCreate
from cbworkflow.models.instances import TransitionRequest
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

FIRST = ["Ada", "Grace", "Alan", "Maria", "José", "Wei", "Fatima", "Olu", "Ivan", "Priya", "Liam", "Noor", "Sven"]
LAST = ["Lovelace", "Hopper", "Turing", "Garcia", "Nguyen", "Okafor", "Ivanova", "Patel", "Smith", "Berg", "Khan"]
COUNTIES = ["Kent", "Sussex", "Essex", "Dorset", "Devon", "Cork", "Mayo"]
BATCH = 2000
TOKEN = "bench-admin-token-0123456789abcdef"


def person(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "name": f"{first} {last} {i}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.org",
        "phone": f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04}",
        "county": rng.choice(COUNTIES),
        "tags": rng.sample(["voter", "donor", "volunteer", "lapsed", "new"], 2),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------- filling
async def fill(services: Any, contacts: int, instances: int, rng: random.Random) -> list[str]:
    """Bulk-load contacts and started instances in batches (the measured paths below go one by one)."""
    contact_ids = await fill_contacts(services, contacts, rng)
    return await fill_instances(services, contact_ids, instances)


async def fill_contacts(services: Any, contacts: int, rng: random.Random) -> list[str]:
    clock = Clock()
    contact_ids: list[str] = []
    region = services.settings.default_phone_region
    from cbworkflow.services.contacts import to_e164

    for start in range(0, contacts, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, contacts)):
            fields = person(rng, i)
            now = clock.now()
            batch.append(
                Contact(
                    id=new_id(),
                    tenant="default",
                    phone_e164=to_e164(fields["phone"], region),
                    created_at=now,
                    updated_at=now,
                    **fields,
                )
            )
        contact_ids.extend(c.id for c in batch)

        def insert(tx: Tx, rows: list[Contact] = batch) -> None:
            for c in rows:
                tx.insert_contact(c)

        await services.store.write("default", insert)
    return contact_ids


async def fill_instances(services: Any, contact_ids: list[str], instances: int) -> list[str]:
    """Started instances of the reference template, spread over `contact_ids`."""
    clock = Clock()
    template = await services.templates.get("default", "county-outreach-v1")
    instance_ids: list[str] = []
    for start in range(0, instances, BATCH):
        made = []
        for i in range(start, min(start + BATCH, instances)):
            now = clock.now()
            inst, snap = new_instance("default", contact_ids[i % len(contact_ids)], template, now)
            made.append((inst, snap, steps.created_events(inst, "bench"), steps.start(inst, now, "bench")))
        instance_ids.extend(m[0].id for m in made)

        def insert_instances(tx: Tx, rows: list[Any] = made) -> None:
            for inst, snapshot, created, started in rows:
                tx.put_snapshot(snapshot)
                tx.insert_instance(inst, snapshot.id)
                tx.append_events(created)
                tx.update_instance(started.instance)
                tx.append_events(started.events)

        await services.store.write("default", insert_instances)
    return instance_ids


# --------------------------------------------------------------------------------------------- measures
async def contact_creates(services: Any, count: int, rng: random.Random) -> float:
    bodies = [ContactCreate(**person(rng, 10_000_000 + i)) for i in range(count)]
    began = time.perf_counter()
    for body in bodies:
        await services.contacts.create(SYSTEM, body)
    return count / (time.perf_counter() - began)


def raw_sqlite_creates(db: Path, count: int, rng: random.Random) -> float:
    """The same rows (contacts + tags, FTS triggers included) with plain sqlite3, one transaction each."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    rows = []
    for i in range(count):
        p = person(rng, 20_000_000 + i)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        digits = "".join(ch for ch in p["phone"] if ch.isdigit())
        rows.append((p, now, digits))
    began = time.perf_counter()
    for p, now, digits in rows:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "INSERT INTO contacts (tenant, id, name, email, phone, phone_e164, phone_digits, county, organization,"
            " role, external_id, tags, metadata, created_at, updated_at)"
            " VALUES ('default', ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, '{}', ?, ?)",
            (
                new_id(),
                p["name"],
                p["email"],
                p["phone"],
                "+1" + digits,
                "1" + digits,
                p["county"],
                json.dumps(p["tags"]),
                now,
                now,
            ),
        )
        conn.executemany(
            "INSERT INTO contact_tags (tenant, tag, contact_pk, created_at) VALUES ('default', ?, ?, ?)",
            [(t, cur.lastrowid, now) for t in p["tags"]],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return count / elapsed


async def transitions_in_process(services: Any, ids: list[str]) -> float:
    began = time.perf_counter()
    for instance_id in ids:
        await services.instances.transition(SYSTEM, instance_id, TransitionRequest(outcome="no_answer"))
    return len(ids) / (time.perf_counter() - began)


async def http_rate(base_url: str, path_body: list[tuple[str, dict[str, Any]]], concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    queue = list(path_body)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:

        async def worker() -> None:
            while queue:
                path, body = queue.pop()
                answer = await client.post(path, json=body)
                if answer.status_code >= 300:
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(path_body) / (time.perf_counter() - began)


async def search_latencies(services: Any, rng: random.Random, count: int) -> list[float]:
    queries = []
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            queries.append(rng.choice(LAST)[: rng.randint(3, 6)].lower())
        elif kind == 1:
            queries.append(f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(0, 999)}")
        elif kind == 2:
            queries.append(f"{rng.randint(200, 999)}-{rng.randint(0, 9999):04}")
        else:
            queries.append(f"{rng.choice(FIRST)} {rng.choice(LAST)} {rng.randint(0, 99999)}")
    from cbworkflow.store.base import PageRequest

    latencies = []
    for q in queries:
        began = time.perf_counter()
        await services.contacts.search("default", q, PageRequest(limit=50))
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def start_process(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


BARE_APP = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
@app.post("/api/instances/{instance_id}/transition")
async def transition(instance_id: str, body: dict) -> dict:
    return {"id": instance_id, **body}
"""


# --------------------------------------------------------------------------------------------- main
async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=3000, help="operations per measured run")
    args = parser.parse_args()
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-"))
    settings = Settings(data_dir=work, admin_token=TOKEN)
    services = await build_services(settings)
    await bootstrap(services, load_example=True)
    began = time.perf_counter()
    instance_ids = await fill(services, args.contacts, args.instances, rng)
    fill_s = time.perf_counter() - began
    print(f"filled {args.contacts} contacts and {args.instances} instances in {fill_s:.1f} s", flush=True)

    results: dict[str, Any] = {
        "contacts": args.contacts,
        "instances": args.instances,
        "runs": args.runs,
        "sample": args.sample,
        "fill_seconds": round(fill_s, 1),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }
    creates, raw, inproc = [], [], []
    used = 0
    for _ in range(args.runs):
        creates.append(await contact_creates(services, args.sample, rng))
        raw.append(raw_sqlite_creates(work / "cbworkflow.db", args.sample, rng))
        inproc.append(await transitions_in_process(services, instance_ids[used : used + args.sample]))
        used += args.sample
    results["contact_creates_per_s"] = round(median(creates))
    results["raw_sqlite_creates_per_s"] = round(median(raw))
    results["transitions_in_process_per_s"] = round(median(inproc))
    latencies = await search_latencies(services, rng, 300)
    latencies.sort()
    results["search_ms_p50"] = round(latencies[len(latencies) // 2], 2)
    results["search_ms_p95"] = round(latencies[int(len(latencies) * 0.95)], 2)
    await services.store.close()

    # Over HTTP: the real server in its own process, on the same database.
    port = free_port()
    env = {**os.environ, "CBW_DATA_DIR": str(work), "CBW_ADMIN_TOKEN": TOKEN, "CBW_RATE_LIMIT": "0"}
    server = start_process(
        [str(Path(sys.executable).parent / "cbworkflow"), "serve", "--port", str(port), "--no-worker"], env, port
    )
    bare_port = free_port()
    (work / "bare_app.py").write_text(BARE_APP)
    bare = start_process(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--app-dir",
            str(work),
        ],
        env,
        bare_port,
    )
    try:
        http, bare_rates = [], []
        for _ in range(args.runs):
            ids = instance_ids[used : used + args.sample]
            used += args.sample
            body = [(f"/api/instances/{i}/transition", {"outcome": "no_answer"}) for i in ids]
            http.append(await http_rate(f"http://127.0.0.1:{port}", body, 8))
            bare_rates.append(await http_rate(f"http://127.0.0.1:{bare_port}", body, 8))
        results["transitions_http_per_s"] = round(median(http))
        results["bare_fastapi_post_per_s"] = round(median(bare_rates))
    finally:
        for proc in (server, bare):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"core-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
