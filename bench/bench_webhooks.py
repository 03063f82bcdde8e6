"""Webhook deliveries: how fast a worker delivers to a local receiver, and what the outbox costs a transition.

    .venv/bin/python bench/bench_webhooks.py [--deliveries 2000] [--transitions 1000] [--runs 3]
                                            [--stores sqlite,postgresql] [--parts deliveries,transitions]

Per store, each figure the median of `--runs` runs on a fresh store (min-max beside it):
- **deliveries/s**, 1 and 8 subscriptions: `--deliveries` messages in all (spread over 50 instances, so the order
  per instance does not serialise them), made by events committed after the subscriptions; then one
  `cbworkflow worker` process (default settings: 32 in flight, 4 per subscription) fans them out and sends them to
  a receiver in its own process (uvicorn, answers 204). Rate = deliveries / (last attempt - first attempt); the
  wall time from the worker's start (its start-up and the fan-out included) is reported too.
  **Baselines, same run, no store:** the same number of POSTs to the same receiver through the engine's outbound
  client, 4 at a time (one subscription's share) and 32 (the worker's), and with one plain keep-alive `httpx`
  client, one at a time.
- **transitions/s**: `InstanceService.transition` one after another in one process, as `bench_core.py` measures
  it: bare (no fan-out or sender running), with the fan-out and sender running in the same process and no
  subscription, and with them delivering every event to 3 subscriptions while the transitions run.
Writes bench/results/webhooks-<timestamp>.json.
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cbworkflow.engine import steps
from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact
from cbworkflow.models.events import Event, EventType
from cbworkflow.models.instances import TransitionRequest
from cbworkflow.models.subscriptions import DeliveryStatus, SubscriptionCreate
from cbworkflow.outbound import send
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store import open_store
from cbworkflow.store.base import PageRequest, Tx
from cbworkflow.wiring import SYSTEM, Services, bootstrap, build_services, make_deliveries

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CBWORKFLOW = Path(sys.executable).parent / "cbworkflow"
TEMPLATE = "county-outreach-v1"
INSTANCES = 50  # the messages are spread over these: one instance's go one at a time
START_EVENTS = 2  # what starting an instance of the reference template writes
RECEIVER = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Place:
    """A fresh store: a SQLite file, or a PostgreSQL database created now and dropped after."""

    def __init__(self, kind: str, work: Path) -> None:
        self.folder = work / f"{kind}-{secrets.token_hex(3)}"
        self.folder.mkdir()
        self.database = f"cbw_hooks_{secrets.token_hex(4)}" if kind == "postgresql" else None
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    @property
    def url(self) -> str:
        if self.database:
            return re.sub(r"/[^/]*$", f"/{self.database}", POSTGRES)
        return f"sqlite:///{self.folder / 'cbw.db'}"

    def settings(self) -> Settings:
        return Settings(
            data_dir=self.folder, database_url=self.url, admin_token="bench-hooks-token-0123456789",
            outbound_allow_private=True,
        )  # fmt: skip

    def drop(self) -> None:
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


class Receiver:
    """A webhook receiver in its own process: uvicorn, one worker, 204 to everything."""

    def __init__(self, work: Path) -> None:
        (work / "receiver_app.py").write_text(RECEIVER)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "receiver_app:app", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log"],
            cwd=work,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url, content=b"{}", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


async def with_services(place: Place, work: Callable[[Services], Awaitable[Any]]) -> Any:
    services = await build_services(place.settings())
    try:
        await bootstrap(services, load_example=True)
        return await work(services)
    finally:
        await services.store.close()


async def subscribe(services: Services, url: str, count: int) -> None:
    for _ in range(count):
        await services.subscriptions.create(SYSTEM, SubscriptionCreate(url=url, events=["*"]))


def fill(tx: Tx, instances: int, notes: int) -> list[str]:
    """`instances` started instances of the reference template, each with `notes` notes: one transaction."""
    template = tx.get_template(TEMPLATE)
    assert template is not None
    now = datetime.now(UTC)
    made = []
    for _ in range(instances):
        contact = Contact(id=new_id(), tenant=tx.tenant, name="Voter", created_at=now, updated_at=now)
        tx.insert_contact(contact)
        instance, snapshot = new_instance(tx.tenant, contact.id, template, now)
        tx.put_snapshot(snapshot)
        tx.insert_instance(instance, snapshot.id)
        step = steps.start(instance, now, "bench")
        tx.update_instance(step.instance)
        events = list(step.events)
        for n in range(notes):
            events.append(
                Event(id=new_id(), type=EventType.USER_NOTE, timestamp=now, actor="bench", message=f"note {n}",
                      instance_id=instance.id, contact_id=contact.id, template_id=TEMPLATE)
            )  # fmt: skip
        tx.append_events(events)
        made.append(instance.id)
    return made


def count_events(tx: Tx) -> int:
    return len(tx.events_after(0, 10_000_000))


# ---------------------------------------------------------------------------------------------------- deliveries/s
def deliveries_run(kind: str, work: Path, receiver: Receiver, subscriptions: int, total: int) -> dict[str, float]:
    place = Place(kind, work)
    try:

        async def prepare(services: Services) -> int:
            await subscribe(services, receiver.url, subscriptions)
            notes = max(0, total // subscriptions // INSTANCES - START_EVENTS)
            await services.store.write(SYSTEM.tenant, lambda tx: fill(tx, INSTANCES, notes))
            return (await services.store.read(SYSTEM.tenant, count_events)) * subscriptions

        expected = asyncio.run(with_services(place, prepare))
        return asyncio.run(deliver(place, expected))
    finally:
        place.drop()


async def deliver(place: Place, expected: int) -> dict[str, float]:
    """Start a worker; wait until every delivery succeeded; the rate over the attempts' window."""
    store = open_store(place.settings())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    env |= {"CBW_DATABASE_URL": place.url, "CBW_OUTBOUND_ALLOW_PRIVATE": "true", "CBW_LOG_LEVEL": "WARNING",
            "CBW_DATA_DIR": str(place.folder)}  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.Popen([str(CBWORKFLOW), "worker"], env=env, cwd=place.folder, stderr=subprocess.DEVNULL)
    try:
        while (await store.read(SYSTEM.tenant, lambda tx: succeeded(tx, False)))[0] < expected:
            if proc.poll() is not None:
                raise RuntimeError("the worker exited")
            await asyncio.sleep(0.25)
        wall = time.perf_counter() - began
        count, first, last = await store.read(SYSTEM.tenant, lambda tx: succeeded(tx, True))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        await store.close()
    assert count == expected, (count, expected)
    window = (last - first).total_seconds()
    return {"deliveries": count, "wall_s": round(wall, 2), "per_s": round(count / window) if window else 0}


def succeeded(tx: Tx, times: bool) -> tuple[int, Any, Any]:
    """How many deliveries succeeded (every subscription's), and when the first and last attempts were."""
    count, first, last = 0, None, None
    for sub in tx.list_subscriptions(PageRequest(100)).items:
        cursor = None
        while True:
            page = tx.list_deliveries(sub.id, DeliveryStatus.SUCCEEDED, PageRequest(500, cursor))
            count += len(page.items)
            if times:
                for d in page.items:
                    at = d.attempts[-1].at
                    first = at if first is None or at < first else first
                    last = at if last is None or at > last else last
            if not (cursor := page.next_cursor):
                break
    return count, first, last


BODY = json.dumps({"type": "user_note", "timestamp": "2026-01-01T00:00:00+00:00", "data": {"x": "y" * 400}})


async def raw_posts(url: str, total: int, concurrency: int, *, outbound: bool) -> float:
    """Baselines: `total` POSTs of a delivery-sized body, `concurrency` at a time, no store. `outbound`: through
    the engine's outbound client as the sender calls it (the guard, a client per call); else one plain
    keep-alive `httpx` client (faster one at a time; its pool is slower than a client per call at 32)."""
    queue = list(range(total))
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one() -> None:
            while queue:
                queue.pop()
                if outbound:
                    answer = await send("POST", url, headers=headers, content=BODY.encode(), allow_private=True,
                                        max_redirects=0, timeout_s=15)  # fmt: skip
                    assert answer.status_code == 204
                else:
                    (await client.post(url, content=BODY, headers=headers)).raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return total / (time.perf_counter() - began)


# ---------------------------------------------------------------------------------------------------- transitions/s
def transitions_run(kind: str, work: Path, receiver: Receiver, count: int, mode: str) -> float:
    """Transitions/s: `mode` is bare (nothing else running), idle (fan-out and sender, no subscription) or
    subscribed (3 subscriptions getting every event)."""
    place = Place(kind, work)

    async def measure(services: Services) -> float:
        if mode == "subscribed":
            await subscribe(services, receiver.url, 3)
        ids = await services.store.write(SYSTEM.tenant, lambda tx: fill(tx, count, 0))
        stop = asyncio.Event()
        running = None
        if mode != "bare":
            await services.outbox.start()
            running = asyncio.create_task(make_deliveries(services, "bench").run(stop))
        began = time.perf_counter()
        for instance_id in ids:
            await services.instances.transition(SYSTEM, instance_id, TransitionRequest(outcome="no_answer"))
        rate = count / (time.perf_counter() - began)
        stop.set()
        if running is not None:
            await running
            await services.outbox.stop()
        return rate

    try:
        rate: float = asyncio.run(with_services(place, measure))
        return rate
    finally:
        place.drop()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values)), "min": round(min(values)), "max": round(max(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--transitions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--parts", default="deliveries,transitions", help="which figures to measure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-hooks-"))
    receiver = Receiver(work)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args), "stores": {}}
    try:
        baselines = (("httpx_1", 1, False), ("outbound_4", 4, True), ("outbound_32", 32, True))
        for name, concurrency, outbound in baselines if "deliveries" in args.parts else ():
            raw = [asyncio.run(raw_posts(receiver.url, args.deliveries, concurrency, outbound=outbound))
                   for _ in range(args.runs)]  # fmt: skip
            results[f"raw_posts_per_s_{name}"] = summary(raw)
            print(f"baseline {name}: POSTs/s {summary(raw)}", flush=True)
        for kind in args.stores.split(","):
            found: dict[str, Any] = {}
            for subs in (1, 8) if "deliveries" in args.parts else ():
                runs = [deliveries_run(kind, work, receiver, subs, args.deliveries) for _ in range(args.runs)]
                found[f"deliveries_per_s_{subs}_subscriptions"] = summary([r["per_s"] for r in runs])
                found[f"wall_s_{subs}_subscriptions"] = [r["wall_s"] for r in runs]
                found[f"deliveries_{subs}_subscriptions"] = runs[0]["deliveries"]
                print(kind, subs, "subscriptions:", found[f"deliveries_per_s_{subs}_subscriptions"], flush=True)
            modes = ("bare", "idle", "subscribed") if "transitions" in args.parts else ()
            rates: dict[str, list[float]] = {mode: [] for mode in modes}
            for _ in range(args.runs):  # the modes in turn, so a drift of the machine touches each alike
                for mode in modes:
                    rates[mode].append(transitions_run(kind, work, receiver, args.transitions, mode))
            for mode in modes:
                found[f"transitions_per_s_{mode}"] = summary(rates[mode])
                print(kind, "transitions", mode, found[f"transitions_per_s_{mode}"], flush=True)
            results["stores"][kind] = found
    finally:
        receiver.close()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(__file__).parent / "results" / f"webhooks-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
