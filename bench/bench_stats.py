"""Campaign numbers at a million instances: how long `GET /api/workflows/{id}/stats` takes to answer.

    .venv/bin/python bench/bench_stats.py [--instances 1000000] [--days 60] [--queries 300] [--runs 3]
        [--stores sqlite,postgresql] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

On a fresh store per store kind: `--instances` voters walk the reference template over a `--days` campaign, each
step at a random hour, staying a random (log-normal) time at each node, taking random outcomes; most end, some
are still on their way. What their steps would add to the counts is written through the store's own counting (the
`Tally` of each write transaction, flushed as it commits), 10,000 instances per transaction. The instances and
events themselves are not stored: the stats read never touches them, only the counts (`workflow_tallies`), whose
size is reported. Then, through `StatsService` (the route's code, minus HTTP), `--queries` all-time reads and
`--queries` reads of a one-week window, in `--runs` rounds: p50, p95 and p99 latency, median of the rounds
(min-max). The target (issue: campaign scale) is p95 ≤ 20 ms at a million instances. Peak resident memory of the
process is reported too. Writes bench/results/stats-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg

from cbworkflow.clock import FakeClock
from cbworkflow.models.events import EventType
from cbworkflow.settings import Settings
from cbworkflow.store.base import Tx
from cbworkflow.wiring import bootstrap, build_services

TEMPLATE = "county-outreach-v1"
BATCH = 10_000
START = datetime(2026, 9, 1, tzinfo=UTC)
RESULTS = Path(__file__).parent / "results"


def _walk(rng: random.Random, nodes: dict[str, Any], days: int) -> tuple[list[SimpleNamespace], str, str | None]:
    """One voter's way through the template: its counted events, its status now and its node now."""
    at = START + timedelta(seconds=rng.uniform(0, days * 86_400 * 0.8))
    end = START + timedelta(days=days)
    node_id, events = "initial_call", []
    for _ in range(20):
        node = nodes[node_id]
        events.append(SimpleNamespace(type=EventType.NODE_ENTERED, node_id=node_id, timestamp=at, data={}))
        if node["type"] == "end":
            done = {"end_status": node.get("end_status", "success")}
            events.append(SimpleNamespace(type=EventType.INSTANCE_COMPLETED, node_id=node_id, timestamp=at, data=done))
            return events, "completed", node_id
        seconds = math.exp(rng.gauss(8, 2.5))  # a few seconds to a few weeks, median about 50 minutes
        left = at + timedelta(seconds=seconds)
        if left > end:
            return events, "waiting" if node["type"] in ("wait", "decision") else "active", node_id
        outcome = rng.choice(sorted(node["transitions"]))
        data = {"outcome": outcome, "seconds": round(seconds, 3)}
        events.append(SimpleNamespace(type=EventType.NODE_EXITED, node_id=node_id, timestamp=left, data=data))
        at, node_id = left, node["transitions"][outcome]
    return events, "active", node_id


async def _fill(services: Any, instances: int, days: int) -> tuple[float, int]:
    template = await services.templates.get("default", TEMPLATE)
    nodes = {node_id: node.model_dump() for node_id, node in template.nodes.items()}
    rng = random.Random(2026)
    steps = 0
    began = time.perf_counter()
    for first in range(0, instances, BATCH):

        def batch(tx: Tx, first: int = first) -> int:
            counted = 0
            tally = tx.tally  # type: ignore[attr-defined]
            for n in range(first, min(first + BATCH, instances)):
                events, status, node = _walk(rng, nodes, days)
                for event in events:
                    event.template_id, event.instance_id = TEMPLATE, f"i{n}"
                tally.events(events)
                tally.placed(TEMPLATE, status, node, 1)
                counted += len(events)
            return counted

        steps += await services.store.write("default", batch)
    return time.perf_counter() - began, steps


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5) * 1000, "p95": pick(0.95) * 1000, "p99": pick(0.99) * 1000}


async def _query(services: Any, queries: int, window: tuple[datetime, datetime] | None) -> dict[str, float]:
    samples = []
    for _ in range(queries):
        began = time.perf_counter()
        found = await services.stats.of_template("default", TEMPLATE, *(window or (None, None)))
        samples.append(time.perf_counter() - began)
    assert found.nodes["initial_call"].entered > 0
    return _percentiles(samples)


def _rows(services: Any) -> int:
    engine = services.store._engine
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM workflow_tallies").scalar_one())


async def one_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"cbw-stats-{kind}-"))
    url, database = None, None
    if kind == "postgresql":
        database = f"cbw_bench_stats_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = f"{args.postgres.rpartition('/')[0]}/{database}"
    settings = Settings(data_dir=tmp, database_url=url, admin_token="bench-stats-token-0123456789")
    services = await build_services(settings, clock=FakeClock())
    try:
        await bootstrap(services, load_example=True)
        fill_s, steps = await _fill(services, args.instances, args.days)
        if kind == "postgresql":
            with services.store._engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE workflow_tallies")
        week = (START + timedelta(days=20), START + timedelta(days=27))
        rounds = [
            {"all_time": await _query(services, args.queries, None), "week": await _query(services, args.queries, week)}
            for _ in range(args.runs)
        ]
        result = {
            "store": kind,
            "instances": args.instances,
            "counted_events": steps,
            "fill_s": round(fill_s, 1),
            "tally_rows": _rows(services),
        }
        for name in ("all_time", "week"):
            for q in ("p50", "p95", "p99"):
                values = [r[name][q] for r in rounds]
                result[f"{name}_{q}_ms"] = {
                    "median": round(statistics.median(values), 2),
                    "min": round(min(values), 2),
                    "max": round(max(values), 2),
                }
        return result
    finally:
        await services.store.close()
        if database is not None:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results = [asyncio.run(one_store(kind, args)) for kind in args.stores.split(",")]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'store':<11} {'instances':>10} {'rows':>8} {'fill s':>7}  all-time p50/p95/p99 ms   one week p50/p95/p99 ms"
    )
    for r in results:
        at, wk = (
            "/".join(f"{r[f'{name}_{q}_ms']['median']:.2f}" for q in ("p50", "p95", "p99"))
            for name in ("all_time", "week")
        )
        print(f"{r['store']:<11} {r['instances']:>10,} {r['tally_rows']:>8,} {r['fill_s']:>7}  {at:<25} {wk}")
    print(f"peak resident memory of this process: {peak_mb:.0f} MB")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"stats-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    machine = {"python": sys.version.split()[0], "platform": platform.platform(), "peak_rss_mb": round(peak_mb)}
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
