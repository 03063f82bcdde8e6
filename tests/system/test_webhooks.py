"""Webhook deliveries from real processes: two `cbworkflow serve` processes (each with its worker) on one store,
one of them killed with SIGKILL while deliveries are in flight and started again. A local receiver checks every
delivery with the `standardwebhooks` package; in the end it has seen every event at least once, each event
always under the same `webhook-id`, and each instance's events in order. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from test_jobs import wait_for

from cbworkflow.models.events import Event
from cbworkflow.settings import Settings
from cbworkflow.store import open_store
from conftest import ADMIN_TOKEN, PostgresDatabase, free_port, start_server, stop_server, store_url
from local_servers import HttpServer, Recorded, Reply

pytestmark = pytest.mark.slow

TEMPLATE = "county-outreach-v1"
ENV = {
    "CBW_OUTBOUND_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "CBW_WEBHOOK_LEASE_S": "2",  # a killed sender's deliveries go again after this
    "CBW_WORKER_POLL_INTERVAL": "0.2",
    "CBW_OUTBOX_POLL_INTERVAL": "0.2",
}


class Receiver:
    """Verifies and records every delivery. While `gate` is closed it holds its answers: the deliveries it got
    are in flight, received but not yet answered."""

    def __init__(self) -> None:
        self.secret = ""
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []  # in arrival order: webhook-id, event id, instance, sequence
        self.bad: list[str] = []
        self.server = HttpServer(self.respond)

    def respond(self, request: Recorded) -> Reply:
        try:
            body = Webhook(self.secret).verify(request.body, request.headers)
        except WebhookVerificationError as exc:
            with self.lock:
                self.bad.append(f"{exc}: {request.headers}")
            return Reply(400)
        data = body["data"]
        with self.lock:
            self.seen.append(
                {
                    "webhook_id": request.headers["webhook-id"],
                    "event": data["id"],
                    "instance": data["instance_id"],
                    "sequence": data["sequence"],
                }
            )
            if not self.gate.is_set():
                self.held += 1
        self.gate.wait(30)
        return Reply(200)

    def events(self) -> set[str]:
        with self.lock:
            return {hit["event"] for hit in self.seen}


def stored_events(settings: Settings, subscription_id: str) -> list[Event]:
    """Every event of the tenant the subscription must get (those committed after it was made), from the store."""

    async def read() -> list[Event]:
        store = open_store(settings)
        try:
            record = await store.read("default", lambda tx: tx.get_subscription(subscription_id))
            assert record is not None
            return await store.read("default", lambda tx: tx.events_after(record.after_sequence, 100_000))
        finally:
            await store.close()

    return asyncio.run(read())


def make_work(client: httpx.Client, n: int) -> list[str]:
    """`n` contacts enrolled and started, with two notes each: five events per instance."""
    made = []
    for i in range(n):
        contact = client.post("/api/contacts", json={"name": f"Voter {i}"})
        assert contact.status_code == 201, contact.text
        body = {"contact_id": contact.json()["id"], "template_id": TEMPLATE, "start": True}
        instance = client.post("/api/instances", json=body)
        assert instance.status_code == 201, instance.text
        for text in ("first note", "second note"):
            noted = client.post(f"/api/instances/{instance.json()['id']}/notes", json={"text": text})
            assert noted.status_code == 200, noted.text
        made.append(instance.json()["id"])
    return made


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_every_event_reaches_the_receiver_signed_in_order_when_a_server_is_killed(kind: str, tmp_path: Path) -> None:
    database = PostgresDatabase() if kind == "postgresql" else None
    url = store_url(kind, tmp_path, database)
    settings = Settings(data_dir=tmp_path, database_url=url, admin_token=ADMIN_TOKEN)
    receiver = Receiver()
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    servers: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> subprocess.Popen[bytes]:
        return start_server(tmp_path, ports[n], logs[n], database_url=url, worker=True, env=ENV)

    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{p}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        for p in ports
    ]
    try:
        servers.append(start(0))
        made = clients[0].post("/api/subscriptions", json={"url": receiver.server.url("/in"), "events": ["*"]})
        assert made.status_code == 201, made.text
        subscription = made.json()
        receiver.secret = subscription["secret"]

        instances = make_work(clients[0], 10)
        wait_for("some deliveries", lambda: len(receiver.seen) >= 20, 60, logs[0])
        receiver.gate.clear()
        wait_for("deliveries in flight", lambda: receiver.held > 0, 60, logs[0])
        servers[0].send_signal(signal.SIGKILL)  # mid-delivery: what it was sending is never recorded as sent
        servers[0].wait()
        receiver.gate.set()
        servers.append(start(1))
        instances += make_work(clients[1], 10)
        servers[0] = start(0)  # two processes from now on, both sending
        instances += make_work(clients[0], 10) + make_work(clients[1], 10)

        expected = stored_events(settings, subscription["id"])
        assert len(expected) >= 5 * len(instances)
        wanted = {e.id for e in expected}
        wait_for("every event at the receiver", lambda: wanted <= receiver.events(), 120, logs[1])
        assert receiver.bad == []

        with receiver.lock:
            seen = list(receiver.seen)
        assert {hit["event"] for hit in seen} == wanted  # nothing from before the subscription, nothing else
        ids: dict[str, set[str]] = defaultdict(set)
        for hit in seen:
            ids[hit["event"]].add(hit["webhook_id"])
        assert all(len(found) == 1 for found in ids.values())  # a message resent keeps its webhook-id
        resent = len(seen) - len(wanted)
        assert resent >= receiver.held > 0  # what was in flight when the server died came again (at least once)
        by_instance: dict[str, list[int]] = defaultdict(list)
        for hit in seen:
            if hit["instance"] is not None:  # contact- and tenant-level events have no instance
                by_instance[hit["instance"]].append(hit["sequence"])
        assert set(by_instance) == set(instances)
        for instance_id, sequences in by_instance.items():
            assert sequences == sorted(sequences), f"{instance_id}: out of order {sequences}"

        # The log says each succeeded; a redelivery sends the same message again.
        log = clients[1].get(f"/api/subscriptions/{subscription['id']}/deliveries", params={"limit": 500}).json()
        assert log["items"]
        assert all(d["status"] == "succeeded" for d in log["items"])
        chosen = log["items"][-1]
        before = sum(1 for hit in receiver.seen if hit["webhook_id"] == chosen["webhook_id"])
        again = clients[1].post(f"/api/subscriptions/{subscription['id']}/deliveries/{chosen['id']}/redeliver")
        assert again.status_code == 202, again.text
        wait_for(
            "the redelivery",
            lambda: sum(1 for hit in receiver.seen if hit["webhook_id"] == chosen["webhook_id"]) > before,
            30,
            logs[1],
        )
        assert receiver.bad == []
        print(json.dumps({"kind": kind, "deliveries": len(seen), "events": len(wanted), "resent": resent}))
    finally:
        for client in clients:
            client.close()
        for proc in servers:
            stop_server(proc)
        receiver.server.close()
        if database is not None:
            database.drop()
