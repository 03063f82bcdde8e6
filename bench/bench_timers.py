"""Timers due at once: how fast `cbworkflow worker` processes fire them, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_timers.py [--timers 100000] [--runs 3] [--stores sqlite,postgresql] [--workers 1,2]

For each store and worker count, on a fresh store: N instances wait at a one-minute timer that falls due at the
same instant, two seconds after the workers (separate processes, `CBW_WORKER_POLL_INTERVAL=0.2`) have opened the
store. Reported (median of `--runs` runs): the time from the due instant until the last timer fired, timers/s,
and the lag of each timer (its `wait_completed` time minus the due instant) at p50 and p99.
Baseline, same run, same store: the same claim-and-update work in plain SQL from one process, batched as the worker
batches (claim 200 due rows, then per 100 one transaction that moves them on and appends their three events each,
by executemany), with no Python models or services.
Also the peak resident memory (VmHWM) of the largest worker during the burst. Writes
bench/results/timers-<timestamp>.json (or `--out`), each row with its runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

import harness
from cbworkflow.clock import FakeClock
from cbworkflow.engine import steps
from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.runtime.timers import PER_TRANSACTION
from cbworkflow.runtime.worker import BATCH as CLAIM
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CBWORKFLOW = Path(sys.executable).parent / "cbworkflow"
TEMPLATE = {
    "id": "timer",
    "name": "Timer",
    "start_node": "hold",
    "nodes": {
        "hold": {
            "type": "wait",
            "wait_condition": {"type": "duration", "duration": "PT1M"},
            "transitions": {"elapsed": "done"},
        },
        "done": {"type": "end"},
    },
}
LEAD = timedelta(seconds=2)  # the timers fall due this long after every worker has opened the store


class Place:
    """A fresh store: a SQLite file, or a PostgreSQL database created now and dropped after."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.folder = work / f"{kind}-{secrets.token_hex(3)}"
        self.folder.mkdir()
        self.database = f"cbw_timers_{secrets.token_hex(4)}" if kind == "postgresql" else None
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    @property
    def url(self) -> str:
        if self.database:
            return re.sub(r"/[^/]*$", f"/{self.database}", POSTGRES)
        return f"sqlite:///{self.folder / 'cbw.db'}"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.database:
            with psycopg.connect(self.url) as conn:
                return list(conn.execute(sql).fetchall())
        with sqlite3.connect(self.folder / "cbw.db") as conn:
            return list(conn.execute(sql).fetchall())

    def execute(self, sql: str, *params: Any) -> None:
        """`sql` with `{m}` for each parameter's placeholder."""
        if self.database:
            with psycopg.connect(self.url) as conn:
                conn.execute(sql.format(m="%s"), params)
            return
        with sqlite3.connect(self.folder / "cbw.db") as conn:
            conn.execute(sql.format(m="?"), params)

    def drop(self) -> None:
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


async def fill(place: Place, count: int, due: datetime) -> None:
    """`count` instances at a one-minute timer that falls due at `due`."""
    clock = FakeClock(due - timedelta(minutes=1))
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token="bench-timers-token-0123456789")
    services = await build_services(settings, clock=clock)
    try:
        await bootstrap(services, load_example=False)
        template = await services.templates.create(SYSTEM, TemplateCreate.model_validate(TEMPLATE))
        for first in range(0, count, 2000):

            def batch(tx: Tx, first: int = first) -> None:
                now = clock.now()
                for _ in range(first, min(first + 2000, count)):
                    contact = Contact(id=new_id(), tenant="default", name="Timer", created_at=now, updated_at=now)
                    tx.insert_contact(contact)
                    inst, snapshot = new_instance("default", contact.id, template, now)
                    tx.put_snapshot(snapshot)
                    tx.insert_instance(inst, snapshot.id)
                    step = steps.start(inst, now, "bench")
                    tx.update_instance(step.instance)
                    tx.append_events(step.events)

            await services.store.write("default", batch)
    finally:
        await services.store.close()
    if place.database:  # fresh statistics, as autovacuum would have after a bulk load (it is off on some machines)
        with psycopg.connect(place.url, autocommit=True) as conn:
            conn.execute("ANALYZE")


def lags(place: Place, due: datetime) -> list[float]:
    rows = place.query("SELECT timestamp FROM events WHERE type = 'wait_completed'")
    found = []
    for (stamp,) in rows:
        when = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        found.append((when - due).total_seconds())
    return sorted(found)


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def db_time(when: datetime, pg: bool) -> Any:
    """A time as the store keeps it: timestamptz on PostgreSQL, fixed-width UTC text on SQLite."""
    return when if pg else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def run_workers(place: Place, count: int, workers: int) -> dict[str, float]:
    fill_started = time.perf_counter()
    asyncio.run(fill(place, count, datetime.now(UTC) + timedelta(days=1)))
    fill_s = time.perf_counter() - fill_started
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    env |= {"CBW_DATABASE_URL": place.url, "CBW_WORKER_POLL_INTERVAL": "0.2", "CBW_LOG_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen([str(CBWORKFLOW), "worker"], env=env, cwd=place.folder, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    peak_mb = 0.0
    try:
        wait_ready(place, procs)
        due = datetime.now(UTC) + LEAD  # every timer falls due at this one instant, after the workers started
        place.execute("UPDATE instances SET wake_at = {m}", db_time(due, place.database is not None))
        while True:
            done = place.query("SELECT count(*) FROM instances WHERE status = 'completed'")[0][0]
            if done >= count:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited")
            time.sleep(0.25)
        peak_mb = max(peak_rss_mb(proc.pid) for proc in procs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    found = lags(place, due)
    assert len(found) == count, (len(found), count)  # each fired exactly once
    total = found[-1]
    return {
        "fill_s": round(fill_s, 1),
        "seconds": round(total, 2),
        "timers_per_s": round(count / total),
        "lag_p50_s": round(percentile(found, 0.5), 3),
        "lag_p99_s": round(percentile(found, 0.99), 3),
        "worker_peak_rss_mb": round(peak_mb, 1),
    }


def wait_ready(place: Place, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker has opened the store (SQLite: the file among its descriptors; PostgreSQL: a connection
    of its own), so a slow start-up on a busy machine is not counted as the timers' lag."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited")
        if place.database:
            sql = f"SELECT count(DISTINCT client_port) FROM pg_stat_activity WHERE datname = '{place.database}'"
            sql += " AND pid <> pg_backend_pid()"
            ready = place.query(sql)[0][0] >= len(procs)
        else:
            ready = all(_holds(proc.pid, place.folder / "cbw.db") for proc in procs)
        if ready:
            return
        time.sleep(0.1)
    raise RuntimeError("the workers did not open the store within 120 s")


def _holds(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float:
    """The most resident memory the process has held (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raw_sql(place: Place, count: int) -> float:
    """Timers/s for the same work in plain SQL, one process, batched as the worker batches: claim `CLAIM`, then one
    transaction per `PER_TRANSACTION` timers (an executemany of the updates, one of the events)."""
    due = datetime.now(UTC) - timedelta(seconds=1)
    asyncio.run(fill(place, count, due))
    now = datetime.now(UTC)
    pg = place.database is not None
    conn: Any = psycopg.connect(place.url) if pg else sqlite3.connect(place.folder / "cbw.db", isolation_level=None)
    for pragma in () if pg else harness.SQLITE_PRAGMAS:  # the store's durability: no fsync a commit in WAL mode
        conn.execute(pragma)
    mark = "%s" if pg else "?"
    lock = " FOR UPDATE SKIP LOCKED" if pg else ""
    stamp: Any = db_time(now, pg)
    began = time.perf_counter()
    fired = 0
    try:
        while True:
            if not pg:
                conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                f"SELECT pk, tenant, id, contact_id, template_id FROM instances WHERE status IN ('active', 'waiting')"
                f" AND wake_at <= {mark} ORDER BY wake_at LIMIT {CLAIM}{lock}",
                (stamp,),
            ).fetchall()
            conn.execute(
                f"UPDATE instances SET worker_id = 'raw' WHERE pk IN ({','.join(str(r[0]) for r in rows) or '0'})"
            )
            conn.execute("COMMIT") if not pg else conn.commit()
            if not rows:
                break
            for first in range(0, len(rows), PER_TRANSACTION):  # as the worker fires them: a batch per transaction
                batch = rows[first : first + PER_TRANSACTION]
                if not pg:
                    conn.execute("BEGIN IMMEDIATE")
                cursor = conn.cursor()
                cursor.executemany(
                    f"UPDATE instances SET status = 'completed', current_node = 'done', wake_at = NULL,"
                    f" worker_id = NULL, revision = revision + 1, updated_at = {mark} WHERE pk = {mark}",
                    [(stamp, pk) for pk, *_ in batch],
                )
                cursor.executemany(
                    "INSERT INTO events (tenant, id, type, timestamp, node_id, actor, data, message, instance_id,"
                    f" contact_id, template_id) VALUES ({', '.join([mark] * 11)})",
                    [
                        (
                            tenant,
                            new_id(),
                            kind,
                            stamp,
                            "hold",
                            "system",
                            "{}",
                            "",
                            instance_id,
                            contact_id,
                            template_id,
                        )
                        for _, tenant, instance_id, contact_id, template_id in batch
                        for kind in ("wait_completed", "node_exited", "node_entered")
                    ],
                )
                conn.execute("COMMIT") if not pg else conn.commit()
                fired += len(batch)
    finally:
        conn.close()
    return fired / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", type=Path, help="write the results here (default: bench/results/timers-<time>.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-timers-"))
    results: dict[str, Any] = {"timers": args.timers, "runs": args.runs, "python": sys.version.split()[0], "rows": []}
    try:
        for kind in args.stores.split(","):
            baseline = []
            for _ in range(args.runs):
                place = Place(kind, work)
                try:
                    baseline.append(raw_sql(place, args.timers))
                finally:
                    place.drop()
            raw = round(statistics.median(baseline))
            print(f"{kind}: raw SQL {raw} timers/s", flush=True)
            for workers in (int(n) for n in args.workers.split(",")):
                runs = []
                for _ in range(args.runs):
                    place = Place(kind, work)
                    try:
                        runs.append(run_workers(place, args.timers, workers))
                    finally:
                        place.drop()
                    print(f"  {kind} x{workers}: {runs[-1]}", flush=True)
                row: dict[str, Any] = {"store": kind, "workers": workers, "raw_sql_timers_per_s": raw}
                row |= {"raw_sql_runs": [round(r) for r in baseline], "runs": runs}
                for key in runs[0]:
                    row[key] = statistics.median(r[key] for r in runs)
                print(f"  {kind} x{workers} median: {json.dumps({k: v for k, v in row.items() if k != 'runs'})}")
                results["rows"].append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out
    if out is None:
        (Path(__file__).parent / "results").mkdir(exist_ok=True)
        out = Path(__file__).parent / "results" / f"timers-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["rows"]:
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}))


if __name__ == "__main__":
    main()
