"""In-process transitions/s against the same statements through the raw driver; long timelines; memory over time.

    .venv/bin/python bench/bench_inprocess.py [--sample 2000] [--runs 3] [--stores sqlite,postgresql]
        [--transitions 100000] [--memory-stores sqlite] [--history 10000] [--concurrency 32]

Per store kind, on a fresh store holding started instances of a template whose one node, a phone call, loops on
itself (`again`):
- rate: `InstanceService.transition` one after another (one transaction each) on `--sample` instances not yet
  moved; baseline, same run: the statements one such transition sent (recorded from a real one, see replay.py)
  replayed through sqlite3 / psycopg on `--sample` other instances, one transaction each;
- concurrent (unless `--concurrency 0`): the same `--sample` instances moved again, `--concurrency` (32)
  transitions in flight at once, as many requests would be; scaling: its rate over the one-at-a-time rate;
- history: transitions on an instance with `--history` events and on one with 10, alternately (200 each): the
  ratio of their median times;
- memory (stores in `--memory-stores`): `--transitions` transitions round-robin over 1,000 instances; this
  process's VmRSS after the first 10% and at the end, and the growth between them in %.
Each of rate and history is measured `--runs` times; memory once per store. `--out` writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import replay
from cbworkflow.clock import Clock
from cbworkflow.engine import steps
from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import TransitionRequest
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store.base import PageRequest, Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

TOKEN = "bench-inprocess-token-0123456789ab"
LOOP = {
    "id": "loop",
    "name": "Loop",
    "start_node": "call",
    "nodes": {
        "call": {"type": "action", "action": "phone_call", "transitions": {"again": "call", "done": "end"}},
        "end": {"type": "end"},
    },
}
AGAIN = TransitionRequest(outcome="again")
BATCH = 2000


async def started(services: Any, count: int) -> list[replay.Target]:
    """`count` contacts, each with a started instance of the loop template (written in batches)."""
    clock = Clock()
    template = await services.templates.get("default", "loop")
    made: list[replay.Target] = []
    for first in range(0, count, BATCH):

        def batch(tx: Tx, size: int = min(BATCH, count - first)) -> list[tuple[str, str]]:
            now = clock.now()
            out = []
            for _ in range(size):
                contact = Contact(id=new_id(), tenant="default", name="Loop Voter", created_at=now, updated_at=now)
                tx.insert_contact(contact)
                inst, snapshot = new_instance("default", contact.id, template, now)
                tx.put_snapshot(snapshot)
                tx.insert_instance(inst, snapshot.id)
                tx.append_events(steps.created_events(inst, "bench"))
                step = steps.start(inst, now, "bench")
                tx.update_instance(step.instance)
                tx.append_events(step.events)
                out.append((inst.id, contact.id))
            return out

        pairs = await services.store.write("default", batch)
        made.extend(replay.Target(i, c, 0) for i, c in pairs)
    pks = dict(harness_rows(services, "SELECT id, pk FROM instances"))
    return [replay.Target(t.instance_id, t.contact_id, pks[t.instance_id]) for t in made]


def harness_rows(services: Any, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with services.store._engine.connect() as conn:  # a read past the store, for the benchmark's bookkeeping
        return [tuple(row) for row in conn.execute(text(sql))]


async def service_rate(services: Any, targets: list[replay.Target]) -> float:
    began = time.perf_counter()
    for target in targets:
        await services.instances.transition(SYSTEM, target.instance_id, AGAIN)
    return len(targets) / (time.perf_counter() - began)


async def concurrent_rate(services: Any, targets: list[replay.Target], at_once: int) -> float:
    """Transitions of one tenant `at_once` at a time (as many API requests in flight): what the store's threads,
    the tenant's outbox lock and the interpreter lock let through together."""
    gate = asyncio.Semaphore(at_once)

    async def one(target: replay.Target) -> None:
        async with gate:
            await services.instances.transition(SYSTEM, target.instance_id, AGAIN)

    began = time.perf_counter()
    await asyncio.gather(*(one(target) for target in targets))
    return len(targets) / (time.perf_counter() - began)


def raw_rate(replayer: replay.Replayer, targets: list[replay.Target]) -> float:
    began = time.perf_counter()
    for target in targets:
        replayer.run(target)
    return len(targets) / (time.perf_counter() - began)


async def lengthen(services: Any, instance_id: str, events: int) -> None:
    """`events` more events on the instance's timeline: copies of its own, written 5,000 per transaction."""

    def read(tx: Tx) -> list[Any]:
        return list(tx.instance_events(instance_id, PageRequest(limit=10)).items)

    model = await services.store.read("default", read)
    for first in range(0, events, 5000):
        size = min(5000, events - first)

        def write(tx: Tx, size: int = size) -> None:
            tx.append_events([model[n % len(model)].model_copy(update={"id": new_id()}) for n in range(size)])

        await services.store.write("default", write)


async def history_ratio(services: Any, long_id: str, short_id: str, pairs: int) -> dict[str, float]:
    """Median time of a transition on the long timeline over the short one's, taken alternately."""
    times: dict[str, list[float]] = {"long": [], "short": []}
    for _ in range(pairs):
        for label, instance_id in (("long", long_id), ("short", short_id)):
            began = time.perf_counter()
            await services.instances.transition(SYSTEM, instance_id, AGAIN)
            times[label].append((time.perf_counter() - began) * 1000)
    long_ms, short_ms = statistics.median(times["long"]), statistics.median(times["short"])
    return {"long_ms": round(long_ms, 3), "short_ms": round(short_ms, 3), "ratio": round(long_ms / short_ms, 3)}


async def memory_growth(services: Any, targets: list[replay.Target], transitions: int) -> dict[str, Any]:
    """This process's VmRSS after 10% of `transitions` (round-robin over `targets`) and at the end."""
    samples: list[tuple[int, float]] = []
    tenth = max(1, transitions // 10)
    began = time.perf_counter()
    for n in range(transitions):
        await services.instances.transition(SYSTEM, targets[n % len(targets)].instance_id, AGAIN)
        if (n + 1) % tenth == 0:
            samples.append((n + 1, round(harness.status_mb(os.getpid(), "VmRSS"), 1)))
    gc.collect()
    at_tenth, end = samples[0][1], samples[-1][1]
    return {
        "transitions": transitions,
        "per_s": round(transitions / (time.perf_counter() - began)),
        "rss_at_10pct_mb": at_tenth,
        "rss_end_mb": end,
        "growth_pct": round((end - at_tenth) / at_tenth * 100, 2),
        "samples": samples,
    }


async def run_store(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    place = harness.Place(kind, work)
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN)
    services = await build_services(settings)
    result: dict[str, Any] = {"store": kind, "sample": args.sample, "history_events": args.history, "runs": []}
    result["concurrency"] = args.concurrency
    try:
        await bootstrap(services, load_example=False)
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(LOOP))
        memory = args.transitions if kind in args.memory_stores.split(",") else 0
        pool = min(1000, max(memory, 1))
        targets = await started(services, 2 * args.sample * args.runs + 4 + pool)
        place.settle()
        warm, probe, long_one, short_one = targets[:4]
        # One transition first, so the one recorded is a steady one (the frozen graph's cache holds the snapshot).
        await services.instances.transition(SYSTEM, warm.instance_id, AGAIN)
        recording, stop = replay.record(services.store._engine)
        await services.instances.transition(SYSTEM, probe.instance_id, AGAIN)
        stop()
        result["statements"] = recording.summary()
        await lengthen(services, long_one.instance_id, args.history)
        for _ in range(2):  # ten events on the short one, as on the long one before it grew
            await services.instances.transition(SYSTEM, short_one.instance_id, AGAIN)
        conn = place.connect()
        if place.pg:
            conn.autocommit = False
        replayer = replay.Replayer(recording, probe, conn, place.pg)
        rest = targets[4:]
        try:
            for n in range(args.runs):
                mine = rest[2 * n * args.sample : (2 * n + 1) * args.sample]
                raws = rest[(2 * n + 1) * args.sample : (2 * n + 2) * args.sample]
                load = harness.loadavg()
                figures = {"load": load, "service_per_s": round(await service_rate(services, mine))}
                figures["raw_per_s"] = round(raw_rate(replayer, raws))
                figures["ratio"] = round(figures["service_per_s"] / figures["raw_per_s"], 3)
                if args.concurrency:  # the same instances again, now many at a time
                    at_once = await concurrent_rate(services, mine, args.concurrency)
                    figures["concurrent_per_s"] = round(at_once)
                    figures["concurrent_scaling"] = round(at_once / figures["service_per_s"], 2)
                figures["history"] = await history_ratio(services, long_one.instance_id, short_one.instance_id, 200)
                result["runs"].append(figures)
                print(f"  {kind}: {json.dumps(figures)}", flush=True)
        finally:
            conn.close()
        if memory:
            load = harness.loadavg()
            result["memory"] = await memory_growth(services, rest[2 * args.runs * args.sample :][:pool], memory)
            result["memory"]["load"] = load
            print(f"  {kind} memory: {json.dumps(result['memory'])}", flush=True)
        events = harness_rows(services, "SELECT count(*) FROM events WHERE type = 'user_action'")[0][0]
        made = 2 + 2 + args.runs * ((3 if args.concurrency else 2) * args.sample + 400) + memory
        if events != made:  # each service call and each replay wrote one: a replay that moved nothing would show
            raise RuntimeError(f"{made} transitions made, {events} recorded")
        result["user_action_events"] = events
    finally:
        await services.store.close()
        place.drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000, help="transitions per measured rate, each side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--transitions", type=int, default=100_000, help="for the memory growth; 0 skips it")
    parser.add_argument("--memory-stores", default="sqlite")
    parser.add_argument("--history", type=int, default=10_000, help="events on the long timeline")
    parser.add_argument("--concurrency", type=int, default=32, help="transitions in flight at once; 0 skips it")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-inprocess-"))
    try:
        results = [asyncio.run(run_store(kind, args, work)) for kind in args.stores.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "statements")}))


if __name__ == "__main__":
    sys.exit(main())
