"""The three stores on the same work: SQLite, PostgreSQL and JSON files.

    .venv/bin/python bench/bench_stores.py [--contacts 100000] [--transitions 100000] [--runs 5]
        [--stores sqlite,postgresql,json] [--queries 30] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

For each store, on a fresh store, in-process through the services (one transaction per operation, as the API does):
- creates `--contacts` contacts one after another, in `--runs` equal slices; the median slice rate is reported;
- bulk-loads `--transitions` started instances of those contacts (timed apart), then records one outcome on
  each, one after another, in `--runs` slices (median rate);
- `--queries` searches and `--queries` lists filtered by a tag (first page of 50), p50 and p95 latency;
- the question an idle worker asks before each nap (when is the next due work?), median of 5.
Baselines measured in the same run, on the same machine:
- `pgbench -N` (the TPC-B-like script without the contended branch/teller updates), 1 client, for 15 s each run,
  median of `--runs`: what one sequential client gets from this PostgreSQL for a small read-write transaction;
- raw SQLite: the same contact rows with plain `sqlite3` (from bench_core);
- raw files: a pretty JSON document written the JSON store's durable way (temp file, fsync, rename, fsync of the
  folder), one after another: the floor under any durable one-file-per-entity store on this disk.
Prints a table and writes bench/results/stores-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import TOKEN, fill_instances, person, raw_sqlite_creates
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.instances import TransitionRequest
from cbworkflow.settings import Settings
from cbworkflow.store.base import ContactFilter, PageRequest
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TAGS = ["voter", "donor", "volunteer", "lapsed", "new"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def slices(total: int, runs: int) -> list[int]:
    size = total // runs
    return [size] * (runs - 1) + [total - size * (runs - 1)]


class Scratch:
    """A fresh place for one store: a folder, and for PostgreSQL a database created now and dropped after."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.folder = work / kind
        self.folder.mkdir()
        self.database: str | None = None
        if kind == "postgresql":
            self.database = f"cbw_bench_{secrets.token_hex(4)}"
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    @property
    def url(self) -> str | None:
        if self.kind == "postgresql":
            return re.sub(r"/[^/]*$", f"/{self.database}", POSTGRES)
        if self.kind == "json":
            return f"json:///{self.folder / 'store'}"
        return None

    def drop(self) -> None:
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


async def measure_store(kind: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    scratch = Scratch(kind, work)
    rng = random.Random(11)
    try:
        settings = Settings(data_dir=scratch.folder, database_url=scratch.url, admin_token=TOKEN)
        services = await build_services(settings)
        await bootstrap(services, load_example=True)
        result: dict[str, Any] = {"store": kind}

        rates = []
        contact_ids: list[str] = []
        for size in slices(args.contacts, args.runs):
            bodies = [ContactCreate(**person(rng, len(contact_ids) + i)) for i in range(size)]
            began = time.perf_counter()
            for body in bodies:
                contact_ids.append((await services.contacts.create(SYSTEM, body)).id)
            rates.append(size / (time.perf_counter() - began))
        result["contact_creates_per_s"] = round(statistics.median(rates))
        print(f"  {kind}: {args.contacts} contacts, median {result['contact_creates_per_s']}/s", flush=True)

        began = time.perf_counter()
        ids = await fill_instances(services, contact_ids, args.transitions)
        result["instance_fill_s"] = round(time.perf_counter() - began, 1)
        rates = []
        used = 0
        for size in slices(args.transitions, args.runs):
            began = time.perf_counter()
            for instance_id in ids[used : used + size]:
                await services.instances.transition(SYSTEM, instance_id, TransitionRequest(outcome="no_answer"))
            rates.append(size / (time.perf_counter() - began))
            used += size
        result["transitions_per_s"] = round(statistics.median(rates))
        print(f"  {kind}: {args.transitions} transitions, median {result['transitions_per_s']}/s", flush=True)

        if scratch.database:  # as autovacuum would have by now (it is off on some machines): fresh statistics
            with psycopg.connect(str(scratch.url), autocommit=True) as conn:
                conn.execute("ANALYZE")
        searches, lists = [], []
        for n in range(args.queries):
            query = rng.choice(["lovel", "hopper", "garcia", "okafor", f"{rng.randint(200, 999)}-", f"e{n}7"])
            began = time.perf_counter()
            await services.contacts.search("default", query, PageRequest(limit=50))
            searches.append((time.perf_counter() - began) * 1000)
            tags = [rng.choice(TAGS)] if n % 2 else rng.sample(TAGS, 2)
            began = time.perf_counter()
            await services.contacts.list("default", ContactFilter(tags=tags), PageRequest(limit=50))
            lists.append((time.perf_counter() - began) * 1000)
        wakes = []
        for _ in range(5):  # what an idle worker asks before each nap
            began = time.perf_counter()
            await services.store.system_read(lambda stx: stx.next_wake(datetime.now(UTC)))
            wakes.append((time.perf_counter() - began) * 1000)
        result["worker_next_wake_ms"] = round(statistics.median(wakes), 1)
        result["search_ms_p50"] = round(percentile(searches, 0.5), 1)
        result["search_ms_p95"] = round(percentile(searches, 0.95), 1)
        result["list_by_tag_ms_p50"] = round(percentile(lists, 0.5), 1)
        result["list_by_tag_ms_p95"] = round(percentile(lists, 0.95), 1)
        await services.store.close()
        return result
    finally:
        scratch.drop()


def pgbench_tps(runs: int) -> float:
    """Median tps of `pgbench -N -c 1` on a scratch database (scale 10)."""
    database = f"cbw_pgbench_{secrets.token_hex(4)}"
    url = re.sub(r"/[^/]*$", f"/{database}", POSTGRES)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        rates = []
        for _ in range(runs):
            out = subprocess.run(
                ["pgbench", "-N", "-c", "1", "-j", "1", "-T", "15", url], check=True, capture_output=True, text=True
            ).stdout
            found = re.search(r"tps = ([0-9.]+)", out)
            assert found, out
            rates.append(float(found.group(1)))
        return statistics.median(rates)
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def raw_file_writes(folder: Path, count: int, rng: random.Random) -> float:
    """One pretty JSON file per record, written durably (temp, fsync, rename, fsync of the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [json.dumps(person(rng, i), indent=2).encode() for i in range(count)]
    began = time.perf_counter()
    for i, data in enumerate(docs):
        temp = folder / f".{i}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, folder / f"{i}.json")
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    return count / (time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--stores", default="sqlite,postgresql,json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-stores-"))
    rng = random.Random(3)
    results: dict[str, Any] = {
        "contacts": args.contacts,
        "transitions": args.transitions,
        "runs": args.runs,
        "queries": args.queries,
        "python": sys.version.split()[0],
        "stores": [],
    }
    try:
        print("baselines…", flush=True)
        results["pgbench_N_1_client_tps"] = round(pgbench_tps(args.runs))
        (work / "raw").mkdir()
        # raw SQLite needs the schema: make it with the store's own migrations.
        raw_settings = Settings(data_dir=work / "raw", admin_token=TOKEN)
        raw_services = await build_services(raw_settings)
        await raw_services.store.close()
        results["raw_sqlite_creates_per_s"] = round(
            statistics.median(raw_sqlite_creates(work / "raw" / "cbworkflow.db", 2000, rng) for _ in range(args.runs))
        )
        results["raw_file_writes_per_s"] = round(
            statistics.median(raw_file_writes(work / "files" / str(n), 2000, rng) for n in range(args.runs))
        )
        for kind in args.stores.split(","):
            print(f"{kind}…", flush=True)
            results["stores"].append(await measure_store(kind, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"stores-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        if key != "stores":
            print(f"{key:<28} {value}")
    columns = [k for k in results["stores"][0] if k != "store"] if results["stores"] else []
    print(f"{'':<28} " + " ".join(f"{r['store']:>12}" for r in results["stores"]))
    for column in columns:
        print(f"{column:<28} " + " ".join(f"{r[column]:>12}" for r in results["stores"]))


if __name__ == "__main__":
    asyncio.run(main())
