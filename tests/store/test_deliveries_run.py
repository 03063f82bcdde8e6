"""Webhook deliveries end to end on each store, on a fake clock: services make events, the fan-out makes
deliveries, the sender POSTs them to a real HTTP receiver on loopback, which checks each signature by hand with the
Standard Webhooks algorithm (HMAC-SHA256 over `id.timestamp.body`, keyed by the base64 after `whsec_`).

The retry schedule, 410 and five days of failures disabling a subscription, `Retry-After`, redelivery, the order
per instance and the per-subscription concurrency cap are each checked here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.instances import InstanceCreate
from cbworkflow.models.subscriptions import Delivery, SubscriptionCreate, SubscriptionPatch
from cbworkflow.runtime.deliveries import RETRY_DELAYS, Deliveries, Sender
from cbworkflow.settings import Settings
from cbworkflow.store.base import EventFilter, PageRequest
from cbworkflow.wiring import SYSTEM, Services, bootstrap, build_services
from conftest import PostgresDatabase
from local_servers import HttpServer, Recorded, Reply, sequence

TEMPLATE = "county-outreach-v1"


def verified(secret: str, hit: Recorded) -> dict[str, Any]:
    """The body of a delivery whose signature is right, by the specification's algorithm (not the package's)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{hit.headers['webhook-id']}.{hit.headers['webhook-timestamp']}.{hit.body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = dict(part.split(",", 1) for part in hit.headers["webhook-signature"].split(" "))
    assert hmac.compare_digest(versions["v1"], expected), "the signature does not verify"
    assert hit.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(hit.body)
    return body


class Hooks:
    """Services, a fan-out and a sender on one store, with a clock moved by hand."""

    def __init__(self, services: Services, clock: FakeClock, loop: asyncio.AbstractEventLoop) -> None:
        self.services = services
        self.clock = clock
        self.loop = loop
        self.sender = self.make_sender()
        self.deliveries = Deliveries(services.store, clock, services.outbox, self.sender, poll_interval=0.1)

    def make_sender(self, **options: Any) -> Sender:
        settings = {"concurrency": 8, "per_subscription": 4, "timeout_s": 10.0, "draw": lambda: 0.5} | options
        return Sender(self.services.store, self.clock, worker_id="w1", allow_private=True, **settings)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def subscribe(self, url: str, events: list[str] | None = None, **extra: Any) -> Any:
        body = SubscriptionCreate(url=url, events=events or ["*"], **extra)
        return self.run(self.services.subscriptions.create(SYSTEM, body))

    def instance(self) -> str:
        async def go() -> str:
            contact = await self.services.contacts.create(SYSTEM, ContactCreate(name="Pat"))
            made = await self.services.instances.create(
                SYSTEM, InstanceCreate(contact_id=contact.id, template_id=TEMPLATE)
            )
            return str(made.id)

        return self.run(go())

    def note(self, instance_id: str, text: str) -> None:
        self.run(self.services.instances.add_note(SYSTEM, instance_id, text))

    def settle(self, sender: Sender | None = None) -> int:
        """Fan out, then send until nothing may go now; returns how many attempts were made."""
        sender = sender or self.sender

        async def go() -> int:
            await self.deliveries.fan_out_once()
            sent = 0
            while claimed := await sender.run_once():
                sent += claimed
                await sender.drain()
            return sent

        return self.run(go())

    def log(self, subscription_id: str, status: str | None = None) -> list[Delivery]:
        from cbworkflow.models.subscriptions import DeliveryStatus

        wanted = DeliveryStatus(status) if status else None
        page = self.run(
            self.services.subscriptions.deliveries(SYSTEM.tenant, subscription_id, wanted, PageRequest(500))
        )
        return list(reversed(page.items))  # oldest first

    def subscription(self, subscription_id: str) -> Any:
        return self.run(self.services.subscriptions.get(SYSTEM.tenant, subscription_id))


@pytest.fixture(params=["sqlite", "postgresql", "json"])
def hooks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hooks]:
    database = PostgresDatabase(migrated=True) if request.param == "postgresql" else None
    url = {"postgresql": database.url if database else None, "json": f"json:///{tmp_path / 'files'}"}.get(request.param)
    settings = Settings(
        data_dir=tmp_path, database_url=url, admin_token="hooks-test-token-0123456789", outbound_allow_private=True
    )
    loop = asyncio.new_event_loop()
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    services = loop.run_until_complete(build_services(settings, clock=clock))
    loop.run_until_complete(bootstrap(services, load_example=True))
    try:
        yield Hooks(services, clock, loop)
    finally:
        loop.run_until_complete(services.store.close())
        loop.close()
        if database is not None:
            database.drop()


@pytest.fixture
def receiver() -> Iterator[HttpServer]:
    with HttpServer(lambda request: Reply(204)) as server:
        yield server


# ---------------------------------------------------------------------------------------------------- delivery
def test_every_event_is_delivered_signed_once_and_in_order_per_instance(hooks: Hooks, receiver: HttpServer) -> None:
    before = hooks.instance()  # made before the subscription: none of its events is sent
    sub = hooks.subscribe(receiver.url("/in"))
    assert sub.secret.startswith("whsec_")
    first, second = hooks.instance(), hooks.instance()
    for n in range(3):
        hooks.note(first, f"first {n}")
        hooks.note(second, f"second {n}")
    hooks.note(before, "after the subscription")
    sent = hooks.settle()

    bodies = [verified(sub.secret, hit) for hit in receiver.hits]
    assert len(bodies) == sent
    stored = hooks.run(hooks.services.store.read(SYSTEM.tenant, lambda tx: tx.events_after(0, 1000, EventFilter())))
    wanted = [e for e in stored if (e.sequence or 0) > hooks.run(_after(hooks, sub.id))]
    assert sorted(b["data"]["id"] for b in bodies) == sorted(e.id for e in wanted)  # each once, nothing before
    assert {b["data"]["instance_id"] for b in bodies} == {first, second, before, None}  # None: contact events
    assert {b["type"] for b in bodies if b["data"]["instance_id"] is None} == {"contact_created"}
    for instance_id in (first, second, before):
        of_it = [b["data"]["sequence"] for b in bodies if b["data"]["instance_id"] == instance_id]
        assert of_it == sorted(of_it)  # in order per instance
    note = next(b for b in bodies if b["type"] == "user_note")
    assert set(note) == {"type", "timestamp", "data"}
    assert note["data"]["template_id"] == TEMPLATE
    assert note["data"]["contact_id"]
    assert note["timestamp"] == note["data"]["timestamp"]
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == len(bodies)
    assert all(d.status.value == "succeeded" and len(d.attempts) == 1 for d in hooks.log(sub.id))
    assert all(d.attempts[0].status_code == 204 for d in hooks.log(sub.id))
    assert hooks.settle() == 0  # nothing twice


async def _after(hooks: Hooks, subscription_id: str) -> int:
    record = await hooks.services.store.read(SYSTEM.tenant, lambda tx: tx.get_subscription(subscription_id))
    assert record is not None
    return record.after_sequence


def test_only_the_event_types_asked_for_are_sent(hooks: Hooks, receiver: HttpServer) -> None:
    sub = hooks.subscribe(receiver.url(), ["user_note", "tag_added"])
    made = hooks.instance()
    hooks.note(made, "one")
    hooks.run(hooks.services.instances.change_tag(SYSTEM, made, "vip", True))
    hooks.settle()
    assert sorted(verified(sub.secret, hit)["type"] for hit in receiver.hits) == ["tag_added", "user_note"]


# ---------------------------------------------------------------------------------------------------- retries
def test_a_500_is_retried_on_the_schedule_with_the_same_webhook_id_and_holds_back_only_its_instance(
    hooks: Hooks,
) -> None:
    failing = HttpServer(lambda request: Reply(500, body=b"down for maintenance"))
    try:
        sub = hooks.subscribe(failing.url(), ["user_note"])
        stuck, free = hooks.instance(), hooks.instance()
        hooks.note(stuck, "first")
        hooks.note(stuck, "second")  # behind the first: waits until the first is done
        hooks.note(free, "other instance")
        started = hooks.clock.now()
        assert hooks.settle() == 2  # the first note of `stuck`, and `free`'s
        hooks.settle()
        assert len(failing.hits) == 2

        first = next(
            d for d in hooks.log(sub.id) if d.event_sequence == min(x.event_sequence for x in hooks.log(sub.id))
        )
        assert first.next_attempt_at == started + RETRY_DELAYS[0]  # the draw of 0.5 is the middle: no jitter
        assert first.attempts[0].error == "the receiver answered 500: down for maintenance"
        for n, delay in enumerate(RETRY_DELAYS, start=2):
            hooks.clock.advance(delay - timedelta(seconds=1))
            assert hooks.settle() == 0, f"attempt {n} went early"
            hooks.clock.advance(timedelta(seconds=1))
            # `stuck`'s first and `free`'s; after the 8th, `stuck`'s first has failed for good and its second goes
            assert hooks.settle() == (2 if n < 8 else 3), f"attempt {n} did not go on time"
        of_first = [hit for hit in failing.hits if hit.headers["webhook-id"] == first.webhook_id]
        assert all(verified(sub.secret, hit)["data"]["instance_id"] == stuck for hit in of_first)
        assert len(of_first) == 8
        assert {hit.headers["webhook-id"] for hit in of_first} == {first.webhook_id}
        assert len({hit.headers["webhook-timestamp"] for hit in of_first}) == 8  # each attempt signed anew
        assert len({hit.body for hit in of_first}) == 1  # the same body every time

        log = {d.id: d for d in hooks.log(sub.id)}
        assert log[first.id].status.value == "failed"
        assert log[first.id].next_attempt_at is None
        assert [a.at - started for a in log[first.id].attempts] == [
            sum(RETRY_DELAYS[:n], timedelta(0)) for n in range(8)
        ]
        # The second of `stuck` waited until the first failed for good, then went at once.
        (second,) = [d for d in log.values() if d.status.value == "pending"]
        assert [a.at for a in second.attempts] == [log[first.id].attempts[-1].at]
        record = hooks.subscription(sub.id)
        assert record.enabled  # failing for a day and some hours, not five
        assert record.failure_count == 17
        assert record.failing_since == started
    finally:
        failing.close()


def test_retry_after_on_a_429_sets_the_next_attempt_and_a_success_clears_the_failures(hooks: Hooks) -> None:
    with HttpServer(
        sequence(Reply(429, {"Retry-After": "120"}), Reply(503, {"Retry-After": "999999"}), Reply(200))
    ) as server:
        sub = hooks.subscribe(server.url(), ["user_note"])
        hooks.note(hooks.instance(), "hello")
        started = hooks.clock.now()
        hooks.settle()
        (delivery,) = hooks.log(sub.id)
        assert delivery.next_attempt_at == started + timedelta(seconds=120)
        assert hooks.subscription(sub.id).failure_count == 1
        hooks.clock.advance(timedelta(seconds=120))
        hooks.settle()
        (delivery,) = hooks.log(sub.id)
        assert delivery.next_attempt_at == started + timedelta(seconds=120) + timedelta(hours=10)  # capped
        hooks.clock.advance(timedelta(hours=10))
        hooks.settle()
        (delivery,) = hooks.log(sub.id)
        assert [a.status_code for a in delivery.attempts] == [429, 503, 200]
        assert delivery.status.value == "succeeded"
        record = hooks.subscription(sub.id)
        assert (record.failure_count, record.failing_since) == (0, None)


def test_a_410_disables_the_subscription_at_once_and_re_enabling_sends_what_waited(hooks: Hooks) -> None:
    gone = threading.Event()
    gone.set()

    def respond(request: Recorded) -> Reply:
        return Reply(410) if gone.is_set() else Reply(200)

    with HttpServer(respond) as server, HttpServer(lambda request: Reply(200)) as watcher:
        sub = hooks.subscribe(server.url(), ["user_note"])
        other = hooks.subscribe(watcher.url(), ["delivery_disabled"])
        first = hooks.instance()
        hooks.note(first, "one")
        hooks.note(first, "two")  # behind the first, which is answered 410
        hooks.settle()
        hooks.settle()  # the delivery_disabled event, fanned out to the other subscription
        record = hooks.subscription(sub.id)
        assert not record.enabled
        assert record.disabled_reason == "the receiver answered 410 Gone"
        assert len(server.hits) == 1  # the first 410 stopped everything: the other note was not sent
        statuses = sorted(d.status.value for d in hooks.log(sub.id))
        assert statuses == ["failed", "pending"]
        (told,) = [verified(other.secret, hit) for hit in watcher.hits]
        assert told["type"] == "delivery_disabled"
        assert told["data"]["data"] == {"subscription_id": sub.id, "reason": "the receiver answered 410 Gone"}
        assert told["data"]["instance_id"] is None
        assert told["data"]["contact_id"] is None

        hooks.note(first, "while disabled")  # a disabled subscription gets no new deliveries
        hooks.clock.advance(timedelta(days=1))
        assert hooks.settle() == 0
        gone.clear()
        patched = hooks.run(hooks.services.subscriptions.update(SYSTEM, sub.id, SubscriptionPatch(enabled=True)))
        assert (patched.enabled, patched.disabled_reason, patched.failure_count) == (True, None, 0)
        assert hooks.settle() == 1  # the note that waited
        assert sorted(d.status.value for d in hooks.log(sub.id)) == ["failed", "succeeded"]


def test_five_days_of_nothing_but_failures_disable_a_subscription(hooks: Hooks) -> None:
    with HttpServer(lambda request: Reply(502)) as server:
        sub = hooks.subscribe(server.url(), ["user_note"])
        started = hooks.clock.now()
        while hooks.subscription(sub.id).enabled:
            assert hooks.clock.now() - started <= timedelta(days=5, hours=10), "not disabled after five days"
            hooks.note(hooks.instance(), "again")  # a new instance each time: none waits behind another
            hooks.settle()
            hooks.clock.advance(timedelta(hours=5))
        record = hooks.subscription(sub.id)
        assert record.disabled_reason == "every delivery attempt failed for 5 days"
        assert record.failing_since == started
        assert hooks.clock.now() - started >= timedelta(days=5)
        assert server.hits


# ---------------------------------------------------------------------------------------------------- redelivery
def test_redeliver_sends_the_same_message_again(hooks: Hooks, receiver: HttpServer) -> None:
    sub = hooks.subscribe(receiver.url(), ["user_note"])
    hooks.note(hooks.instance(), "hello")
    hooks.settle()
    (delivery,) = hooks.log(sub.id)
    hooks.clock.advance(timedelta(minutes=3))
    again = hooks.run(hooks.services.subscriptions.redeliver(SYSTEM, sub.id, delivery.id))
    assert again.status.value == "pending"
    assert hooks.settle() == 1
    first, second = receiver.hits
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.webhook_id
    assert first.body == second.body
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 180
    verified(sub.secret, second)
    (delivery,) = hooks.log(sub.id)
    assert [a.status_code for a in delivery.attempts] == [204, 204]
    assert delivery.redelivered_at == hooks.clock.now()


# ---------------------------------------------------------------------------------------------------- concurrency
def test_a_stuck_receiver_holds_only_its_own_share_of_the_sender(hooks: Hooks) -> None:
    let_go = threading.Event()

    def stuck(request: Recorded) -> Reply:
        let_go.wait(30)
        return Reply(200)

    with HttpServer(stuck) as slow, HttpServer(lambda request: Reply(200)) as quick:
        slow_sub = hooks.subscribe(slow.url(), ["user_note"])
        quick_sub = hooks.subscribe(quick.url(), ["user_note"])
        for _ in range(5):
            hooks.note(hooks.instance(), "hello")
        sender = hooks.make_sender(concurrency=6, per_subscription=2)

        async def go() -> None:
            await hooks.deliveries.fan_out_once()
            while len(quick.hits) < 5:  # the quick receiver gets everything while the slow one holds two
                await sender.run_once()
                await asyncio.sleep(0.01)
            assert len(slow.hits) == 2
            let_go.set()
            await sender.drain()
            while await sender.run_once():
                await sender.drain()

        hooks.run(asyncio.wait_for(go(), 60))
        assert len(slow.hits) == 5
        assert all(d.status.value == "succeeded" for d in hooks.log(slow_sub.id) + hooks.log(quick_sub.id))


def test_an_answer_the_guard_refuses_or_a_redirect_is_a_failed_attempt(hooks: Hooks) -> None:
    with HttpServer(lambda request: Reply(302, {"Location": "/elsewhere"})) as server:
        sub = hooks.subscribe(server.url(), ["user_note"])
        hooks.note(hooks.instance(), "hello")
        hooks.settle()
        (delivery,) = hooks.log(sub.id)
        assert delivery.attempts[0].status_code == 302
        assert len(server.hits) == 1  # not followed
        guarded = hooks.make_sender()
        guarded.allow_private = False
        hooks.clock.advance(RETRY_DELAYS[0])
        hooks.settle(guarded)
        (delivery,) = hooks.log(sub.id)
        assert delivery.attempts[1].status_code is None
        assert "loopback" in (delivery.attempts[1].error or "")
        assert len(server.hits) == 1
