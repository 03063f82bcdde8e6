"""Bulk enrolment: N contacts into one template, as `cbworkflow worker` runs the job, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_bulk.py [--contacts 100000] [--runs 3] [--stores sqlite,postgresql]
        [--batch-size 500] [--profile]

Per store, once, before any timing: a fresh store with the template `bulk` (its start node is a three-day wait),
N contacts (made with the store's own `insert_contact`, 2,000 per transaction, as bench_core fills its store) and
one queued bulk-enrolment job of every contact with `start: true`, made by `BulkEnrolment.enrol` (what
`POST /api/instances/bulk` does above `CBW_BULK_INLINE_LIMIT`). Every run starts from a copy of that store (the
SQLite file; PostgreSQL's `CREATE DATABASE … TEMPLATE`), so all runs and the baseline start from the same rows.
- ours: one `cbworkflow worker` process (`CBW_JOB_BATCH_SIZE` = --batch-size) claims the job and runs it through
  `runtime/jobs.py` and `services/bulk.py`, a batch per transaction. Timed from the job's `started_at` (its claim)
  until this process sees it `succeeded` (polled every 0.1 s). Each enrolment writes one instance row (waiting at
  the wait node, its timer in `wake_at`) and four events (instance_created, instance_started, node_entered,
  wait_started); each batch also saves the job row, and the first batch the template's snapshot. The rows are
  counted after each run. Peak resident memory: the worker's VmHWM (/proc/PID/status) just before it is stopped
  (not `getrusage(RUSAGE_CHILDREN)`: the child's peak before `exec` counts, which is this process's size, and this
  process holds the baseline's rows).
- baseline, same run, same store kind, on a fresh copy: the very rows the first run wrote (read back from its
  store: every column but the integer key), inserted with `executemany` (SQLite: sqlite3 with the store's pragmas,
  `BEGIN IMMEDIATE … COMMIT`; PostgreSQL: psycopg's `executemany`, which pipelines), per transaction one batch of
  --batch-size instances, their events and an update of the job row (the columns the store's save writes), the
  snapshot row in the first. Same tables, columns, indexes, triggers and durability settings; it reads nothing.
Reported per store: median (min-max) seconds of --runs runs for both, the ratio of the medians, rows/s (instance
and event rows written), and the worker's peak memory. `--profile` instead runs the job once per store inside this
process with cProfile on the thread that runs the store's transactions, prints the top functions and writes the
profile to bench/results/. Results: bench/results/bulk-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.string import TextLoader

import cbworkflow

sys.path.insert(0, str(Path(__file__).parent))
import harness
from bench_core import TOKEN, fill_contacts
from cbworkflow.models.instances import BulkEnrol
from cbworkflow.models.jobs import Job
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, bootstrap, build_services, job_runner

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SRC = str(Path(cbworkflow.__file__).resolve().parents[1])  # the worker runs the code this process imported
TEMPLATE = {
    "id": "bulk",
    "name": "Bulk",
    "start_node": "hold",
    "nodes": {
        "hold": {
            "type": "wait",
            "wait_condition": {"type": "duration", "duration": "P3D"},
            "transitions": {"elapsed": "done"},
        },
        "done": {"type": "end"},
    },
}
EVENTS_PER_INSTANCE = 4


class Place(harness.Place):
    """A store of its own (harness.Place), read back as the bulk enrolment wrote it."""

    def connect(self) -> Any:
        """A connection in autocommit mode, JSON read back as the text stored."""
        if self.database:
            conn = psycopg.connect(self.url, autocommit=True)
            conn.adapters.register_loader("jsonb", TextLoader)
            return conn
        return sqlite3.connect(self.db, isolation_level=None)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        """The rows the enrolment wrote, by kind, and the timers (waiting instances with a wake time)."""
        found = {table: self.query(f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}
        timers = "SELECT count(*) FROM instances WHERE status = 'waiting' AND wake_at IS NOT NULL"
        found["timers"] = self.query(timers)[0][0]
        return found

    def drop(self) -> None:
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


TABLES = ("instances", "events", "instance_tags", "snapshots")


def db_time(when: datetime, pg: bool) -> Any:
    """A time as the store keeps it: timestamptz on PostgreSQL, fixed-width UTC text on SQLite."""
    return when if pg else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def read_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def make_seed(kind: str, work: Path, contacts: int) -> Place:
    """The store every run copies: the template, the contacts, and the queued job."""
    place = Place(kind, work)
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN, bulk_inline_limit=0)
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=False)
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(TEMPLATE))
        await fill_contacts(services, contacts, random.Random(5))
        job = await services.bulk.enrol(SYSTEM, BulkEnrol.model_validate({"template_id": "bulk", "start": True}))
        assert isinstance(job, Job), job  # queued for the worker, not done inline
    finally:
        await services.store.close()
    conn = place.connect()
    try:  # PostgreSQL: fresh statistics (autovacuum is off on some machines); SQLite: one file to copy
        conn.execute("ANALYZE" if place.pg else "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return place


def status_line(path: Path, field: str) -> float:
    """A memory figure of /proc/PID/status, in MB."""
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in {path}")


def worker_env(place: Place, batch_size: int) -> dict[str, str]:
    """The environment of a `cbworkflow worker` on `place`, running the code this process imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    return env | {
        "CBW_DATABASE_URL": place.url,
        "CBW_DATA_DIR": str(place.folder),
        "CBW_LOG_LEVEL": "WARNING",
        "CBW_JOB_BATCH_SIZE": str(batch_size),
        "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
    }


def run_ours(seed: Place, work: Path, contacts: int, batch_size: int) -> tuple[dict[str, Any], Place]:
    """One `cbworkflow worker` runs the queued job on a copy of the seed; the copy is the caller's to drop."""
    place = Place(seed.kind, work, seed)
    env = worker_env(place, batch_size)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbworkflow", "worker"], env=env, cwd=place.folder, stderr=subprocess.DEVNULL
    )
    status_file = Path(f"/proc/{proc.pid}/status")
    conn = place.connect()
    rss: list[tuple[float, float]] = []
    try:
        spawned = time.monotonic()
        while True:
            status, started, error = conn.execute("SELECT status, started_at, error FROM jobs").fetchone()
            if status in ("succeeded", "failed", "cancelled"):
                done = datetime.now(UTC)
                break
            if proc.poll() is not None:
                raise RuntimeError("the worker exited")
            if not rss or time.monotonic() - spawned - rss[-1][0] >= 5:
                rss.append((round(time.monotonic() - spawned, 1), round(status_line(status_file, "VmRSS"), 1)))
            time.sleep(0.1)
        peak = status_line(status_file, "VmHWM")
    finally:
        conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    if status != "succeeded":
        raise RuntimeError(f"the job {status}: {error}")
    seconds = (done - read_time(started)).total_seconds()
    counts = place.counts()
    expected = {"instances": contacts, "events": EVENTS_PER_INSTANCE * contacts, "timers": contacts}
    assert all(counts[k] == v for k, v in expected.items()), (counts, expected)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_mb_over_time": rss,
        "rows": counts,
    }, place


def run_killed(seed: Place, work: Path, contacts: int, batch_size: int) -> dict[str, Any]:
    """SIGKILL the worker a third of the way through the job, start another: every contact enrolled once."""
    place = Place(seed.kind, work, seed)
    env = worker_env(place, batch_size) | {"CBW_JOB_LEASE_S": "5"}  # the second worker takes over soon

    def worker() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "cbworkflow", "worker"]
        return subprocess.Popen(command, env=env, cwd=place.folder, stderr=subprocess.DEVNULL)

    conn = place.connect()
    try:
        first = worker()
        while True:
            (progress,) = conn.execute("SELECT progress FROM jobs").fetchone()
            done = (json.loads(progress) if isinstance(progress, str) else progress)["done"]
            if done >= contacts // 3:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = done
        began = time.monotonic()
        second = worker()
        try:
            while True:
                status, result = conn.execute("SELECT status, result FROM jobs").fetchone()
                if status in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=120)
        (distinct,) = conn.execute("SELECT count(DISTINCT contact_id) FROM instances").fetchone()
    finally:
        conn.close()
    counts = place.counts()
    place.drop()
    result = json.loads(result) if isinstance(result, str) else result
    once = status == "succeeded" and counts["instances"] == distinct == contacts == result["enrolled"]
    return {
        "store": seed.kind,
        "killed_after": killed_at,
        "finished_in_s_after_restart": round(time.monotonic() - began, 1),
        "status": status,
        "result": result,
        "instances": counts["instances"],
        "distinct_contacts": distinct,
        "events": counts["events"],
        "every_contact_once": once and counts["events"] == EVENTS_PER_INSTANCE * contacts,
    }


@dataclass
class Written:
    """The rows an enrolment wrote, as stored, to write again: columns and values of each table, by batch."""

    instance_columns: list[str]
    event_columns: list[str]
    snapshot_columns: list[str]
    snapshot: tuple[Any, ...]
    batches: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]  # (instance rows, their event rows)
    job_id: str
    job_params: str
    job_created_by: str | None


def written_rows(place: Place, batch_size: int) -> Written:
    conn = place.connect()
    try:

        def table(sql: str, key: str | None) -> tuple[list[str], list[tuple[Any, ...]]]:
            cur = conn.execute(sql)
            names = [d[0] for d in cur.description]
            keep = [n for n, name in enumerate(names) if name != key]
            return [names[n] for n in keep], [tuple(row[n] for n in keep) for row in cur.fetchall()]

        instance_columns, instances = table("SELECT * FROM instances ORDER BY pk", "pk")
        event_columns, events = table("SELECT * FROM events ORDER BY seq", "seq")
        snapshot_columns, snapshots = table("SELECT * FROM snapshots", None)
        job_id, params, created_by = conn.execute("SELECT id, params, created_by FROM jobs").fetchone()
    finally:
        conn.close()
    by_instance: dict[str, list[tuple[Any, ...]]] = {}
    at = event_columns.index("instance_id")
    for row in events:
        by_instance.setdefault(row[at], []).append(row)
    at = instance_columns.index("id")
    batches = []
    for first in range(0, len(instances), batch_size):
        chunk = instances[first : first + batch_size]
        batches.append((chunk, [e for row in chunk for e in by_instance[row[at]]]))
    (snapshot,) = snapshots
    return Written(instance_columns, event_columns, snapshot_columns, snapshot, batches, job_id, params, created_by)


JOB_COLUMNS = (  # what the store's save of a job writes (all but tenant, id, kind, created_at and the key)
    "status",
    "params",
    "progress",
    "result",
    "error",
    "cursor",
    "cancel_requested",
    "held_by",
    "created_by",
    "lease_until",
    "started_at",
    "finished_at",
    "revision",
)


def run_baseline(seed: Place, work: Path, written: Written) -> tuple[float, dict[str, int]]:
    """The same rows with executemany on a fresh copy of the seed, committed in the same batches: seconds, rows."""
    place = Place(seed.kind, work, seed)
    pg = place.pg
    mark = "%s" if pg else "?"

    def insert(table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

    insert_instances = insert("instances", written.instance_columns)
    insert_events = insert("events", written.event_columns)
    insert_snapshot = insert("snapshots", written.snapshot_columns)
    update_job = (
        f"UPDATE jobs SET {', '.join(f'{c} = {mark}' for c in JOB_COLUMNS)}"
        f" WHERE tenant = {mark} AND id = {mark} AND revision = {mark}"
    )
    now = datetime.now(UTC)
    total = sum(len(instances) for instances, _ in written.batches)
    jobs = []
    done = 0
    for n, (instances, _) in enumerate(written.batches):
        done += len(instances)
        last = n == len(written.batches) - 1
        jobs.append(
            (
                "succeeded" if last else "running",
                written.job_params,
                json.dumps({"done": done, "total": total}),
                json.dumps({"enrolled": done, "skipped": 0}),
                None,
                None if last else f"{db_time(now, False)}|{n:012d}",
                False,
                None if last else "bench-raw",
                written.job_created_by,
                None if last else db_time(now + timedelta(seconds=60), pg),
                db_time(now, pg),
                db_time(now, pg) if last else None,
                n + 2,  # the claim made it 1
                "default",
                written.job_id,
                n + 1,
            )
        )
    try:
        if pg:
            conn: Any = psycopg.connect(place.url)
        else:
            conn = sqlite3.connect(place.db, isolation_level=None)
            for pragma in harness.SQLITE_PRAGMAS:
                conn.execute(pragma)
        cur = conn.cursor()
        began = time.perf_counter()
        for n, (instances, events) in enumerate(written.batches):
            if not pg:
                cur.execute("BEGIN IMMEDIATE")
            if n == 0:
                cur.execute(insert_snapshot, written.snapshot)
            cur.executemany(insert_instances, instances)
            cur.executemany(insert_events, events)
            cur.execute(update_job, jobs[n])
            if pg:
                conn.commit()
            else:
                cur.execute("COMMIT")
        seconds = time.perf_counter() - began
        conn.close()
        return seconds, place.counts()
    finally:
        place.drop()


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def measure(kind: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{kind}: seeding {args.contacts:,} contacts…", flush=True)
    began = time.perf_counter()
    seed = asyncio.run(make_seed(kind, work, args.contacts))
    print(f"  seeded in {time.perf_counter() - began:.0f} s", flush=True)
    ours: list[dict[str, Any]] = []
    baseline: list[float] = []
    written: Written | None = None
    try:
        for run in range(args.runs):
            result, place = run_ours(seed, work, args.contacts, args.batch_size)
            try:
                if written is None:
                    written = written_rows(place, args.batch_size)
            finally:
                place.drop()
            ours.append(result)
            print(f"  run {run + 1} ours: {result['seconds']} s, peak {result['peak_rss_mb']} MB", flush=True)
            seconds, rows = run_baseline(seed, work, written)
            assert all(rows[k] == result["rows"][k] for k in rows), (rows, result["rows"])
            baseline.append(seconds)
            print(f"  run {run + 1} baseline: {seconds:.2f} s", flush=True)
    finally:
        seed.drop()
    rows = ours[0]["rows"]
    written_count = rows["instances"] + rows["events"]
    ours_s = spread([r["seconds"] for r in ours])
    base_s = spread(baseline)
    return {
        "store": kind,
        "contacts": args.contacts,
        "batch_size": args.batch_size,
        "rows_per_run": rows,
        "ours_s": ours_s,
        "baseline_s": base_s,
        "baseline": "sqlite3 executemany" if kind == "sqlite" else "psycopg executemany (pipelined)",
        "ratio": round(ours_s["median"] / base_s["median"], 2),
        "ours_rows_per_s": round(written_count / ours_s["median"]),
        "baseline_rows_per_s": round(written_count / base_s["median"]),
        "ours_enrolments_per_s": round(args.contacts / ours_s["median"]),
        "peak_rss_mb": spread([r["peak_rss_mb"] for r in ours]),
        "runs": ours,
        "baseline_runs_s": [round(s, 2) for s in baseline],
    }


async def profile_job(seed: Place, work: Path, batch_size: int, out: Path) -> str:
    """The job once, in this process, with cProfile on the thread running the store's transactions."""
    place = Place(seed.kind, work, seed)
    profiler = cProfile.Profile()
    try:
        settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN, job_batch_size=batch_size)
        services = await build_services(settings)
        store: Any = services.store
        plain: Callable[..., Any] = store.run_tenant

        def profiled(tenant: str, fn: Callable[..., Any], writing: bool) -> Any:
            profiler.enable()
            try:
                return plain(tenant, fn, writing)
            finally:
                profiler.disable()

        store.run_tenant = profiled
        began = time.perf_counter()
        assert await job_runner(services, "bench-profile").run_next(asyncio.Event())
        elapsed = time.perf_counter() - began
        await services.store.close()
    finally:
        place.drop()
    profiler.dump_stats(out)
    text = io.StringIO()
    print(f"{seed.kind}: the job took {elapsed:.1f} s under the profiler", file=text)
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--batch-size", type=int, default=Settings.model_fields["job_batch_size"].default)
    parser.add_argument("--profile", action="store_true", help="profile one enrolment per store instead")
    parser.add_argument(
        "--kill", action="store_true", help="instead: SIGKILL the worker mid-job, restart, check each contact once"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-bulk-"))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "contacts": args.contacts,
        "runs": args.runs,
        "batch_size": args.batch_size,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "cores": os.cpu_count(),
        "stores": [],
    }
    try:
        for kind in args.stores.split(","):
            if args.kill:
                seed = asyncio.run(make_seed(kind, work, args.contacts))
                try:
                    print(json.dumps(run_killed(seed, work, args.contacts, args.batch_size)))
                finally:
                    seed.drop()
                continue
            if args.profile:
                seed = asyncio.run(make_seed(kind, work, args.contacts))
                try:
                    print(asyncio.run(profile_job(seed, work, args.batch_size, out / f"bulk-{kind}-{stamp}.prof")))
                finally:
                    seed.drop()
                continue
            results["stores"].append(measure(kind, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.profile or args.kill:
        return
    (out / f"bulk-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':<26}" + "".join(f"{r['store']:>34}" for r in results["stores"]))

    def ranged(figure: dict[str, float]) -> str:
        return f"{figure['median']} ({figure['min']}-{figure['max']})"

    shown: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("ours, s", lambda r: ranged(r["ours_s"])),
        ("baseline, s", lambda r: ranged(r["baseline_s"])),
        ("ratio", lambda r: f"{r['ratio']}x"),
        ("rows/s ours / baseline", lambda r: f"{r['ours_rows_per_s']:,} / {r['baseline_rows_per_s']:,}"),
        ("peak RSS, MB", lambda r: ranged(r["peak_rss_mb"])),
    ]
    for label, show in shown:
        print(f"{label:<26}" + "".join(f"{show(r):>34}" for r in results["stores"]))


if __name__ == "__main__":
    main()
