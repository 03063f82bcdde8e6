"""Webhook deliveries: the fan-out from the outbox to subscriptions, and the sender (docs/webhooks.md).

**Fan-out.** For each tenant whose last event sequence is past the `subscriptions` cursor, one write transaction
locks that cursor, reads the next events and the tenant's enabled subscriptions, writes one delivery per (event,
subscription that wants its type) and moves the cursor. The cursor moves with the deliveries, so a crash loses
nothing and makes nothing twice; any number of processes may run it (the lock takes them in turn). A subscription
gets only events committed after it was made (`after_sequence`).

**Sender.** Claims deliveries that may go now (`SystemTx.claim_deliveries`: due, unleased, subscription enabled,
nothing earlier of the same instance pending), each leased for `lease`; signs each with `standardwebhooks`, POSTs
it through the outbound client (SSRF guard, no redirects, a capped answer, a timeout) outside any transaction, then
records the attempt in one transaction that first checks it still holds the lease. A sender killed mid-delivery
loses nothing: the lease runs out and the delivery is sent again, with the same `webhook-id` and body (at least
once). At most `concurrency` requests are in flight per process, and `per_subscription` per subscription, so a
slow or dead receiver holds up only its own share.

**Schedule** (api.md): attempts at about 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (each wait ±10 %), or
after what a 429 or 503 asks in `Retry-After` (at most 10 h); then the delivery has failed. `410 Gone` disables the
subscription at once; so does five days of nothing but failed attempts. Either writes `delivery_disabled`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from standardwebhooks import Webhook

from .. import retry
from ..clock import Clock
from ..ids import new_id
from ..models.events import Event
from ..models.subscriptions import DeliveryAttempt, DeliveryRecord, DeliveryStatus, SubscriptionRecord
from ..outbound import OutboundError, send
from ..outbound.guard import Resolver
from ..store.base import DueDelivery, Store, Tx
from .outbox import OutboxSignal

log = logging.getLogger("cbworkflow.deliveries")

CURSOR = "subscriptions"  # the fan-out's outbox cursor
FAN_OUT_BATCH = 500  # events one fan-out transaction takes
RETRY_DELAYS = tuple(
    timedelta(seconds=s) for s in (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
)  # the waits after attempts 1 to 7; the 8th is the last
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.1  # each wait drawn in ±10 % of its length
RETRY_AFTER_CAP = timedelta(hours=10)
FAILING_FOR = timedelta(days=5)  # a subscription whose every attempt failed this long is disabled
COALESCE_S = 0.02  # how long the fan-out lets commits gather after the first wakes it
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of an answer (its status is what counts)
ERROR_TEXT = 200  # characters of a failed answer's body kept in the attempt's error


# ---------------------------------------------------------------------------------------------------- messages
def message_body(event: Event) -> str:
    """The exact JSON text a delivery signs and sends: `{"type", "timestamp", "data": the event}`."""
    data = event.model_dump(mode="json")
    body = {"type": data["type"], "timestamp": data["timestamp"], "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def order_key(event: Event) -> str:
    """What a delivery is ordered within: its instance, else its contact, else the tenant."""
    if event.instance_id:
        return event.instance_id
    return f"contact:{event.contact_id}" if event.contact_id else "tenant"


def signed_headers(secret: str, webhook_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: the timestamp is the attempt's, the id the message's."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
        "Content-Type": "application/json",
    }


# ---------------------------------------------------------------------------------------------------- fan-out
def fan_out(tx: Tx, now: datetime, limit: int = FAN_OUT_BATCH) -> tuple[int, int, bool]:
    """One batch of the tenant's events made into deliveries: (the cursor now, deliveries made, more to do)."""
    cursor = tx.outbox_cursor(CURSOR)  # locked: one fan-out of a tenant at a time, in any process
    subscriptions = tx.enabled_subscriptions()
    head = tx.last_sequence()
    if not subscriptions:
        if head > cursor:
            tx.set_outbox_cursor(CURSOR, head)
        return max(head, cursor), 0, False
    start = max(cursor, min(sub.after_sequence for sub in subscriptions))
    events = tx.events_after(start, limit)
    made = [
        _delivery(tx.tenant, sub, event, now)
        for event in events
        for sub in subscriptions
        if (event.sequence or 0) > sub.after_sequence and sub.wants(event.type.value)
    ]
    tx.insert_deliveries(made)
    reached = (events[-1].sequence or start) if events else max(start, head)
    if reached != cursor:
        tx.set_outbox_cursor(CURSOR, reached)
    return reached, len(made), len(events) == limit


def _delivery(tenant: str, sub: SubscriptionRecord, event: Event, now: datetime) -> DeliveryRecord:
    return DeliveryRecord(
        tenant=tenant,
        id=new_id(),
        subscription_id=sub.id,
        webhook_id=f"msg_{new_id()}{new_id()}",
        event_sequence=event.sequence or 0,
        event_type=event.type.value,
        order_key=order_key(event),
        next_attempt_at=now,
        body=message_body(event),
        created_at=now,
    )


# ---------------------------------------------------------------------------------------------------- attempts
@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, as the sender saw it."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    retry_after_s: float | None = None  # asked for by a 429 or 503

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def next_wait(attempts: int, outcome: Outcome, draw: float) -> timedelta | None:
    """The wait before the next attempt after `attempts` failed ones (None: that was the last), for a `draw` in
    [0, 1). A `Retry-After` asked for replaces the scheduled wait, up to RETRY_AFTER_CAP."""
    if attempts >= MAX_ATTEMPTS:
        return None
    if outcome.retry_after_s is not None and outcome.retry_after_s > 0:
        return min(timedelta(seconds=outcome.retry_after_s), RETRY_AFTER_CAP)
    return RETRY_DELAYS[attempts - 1] * (1 + JITTER * (2 * draw - 1))


def record_attempt(
    tx: Tx, claim: DeliveryRecord, worker_id: str, at: datetime, outcome: Outcome, now: datetime, draw: float
) -> bool:
    """Save an attempt and what follows from it; false (nothing saved) when the sender no longer holds the
    delivery (its lease ran out and another sender took it, or the subscription was deleted)."""
    delivery = tx.get_delivery(claim.subscription_id, claim.id)
    sub = tx.get_subscription(claim.subscription_id)
    if delivery is None or sub is None or delivery.status is not DeliveryStatus.PENDING:
        return False
    if delivery.held_by != worker_id:
        return False
    attempt = DeliveryAttempt(
        at=at, status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=outcome.error
    )
    delivery.attempts.append(attempt)
    delivery.held_by, delivery.lease_until = None, None
    events: list[Event] = []
    if outcome.ok:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.SUCCEEDED, None
        if sub.failure_count or sub.failing_since is not None:
            sub.failure_count, sub.failing_since, sub.updated_at = 0, None, now
            tx.update_subscription(sub)
    else:
        sub.failure_count += 1
        sub.failing_since = sub.failing_since or at
        sub.updated_at = now
        wait = None if outcome.status_code == 410 else next_wait(delivery.attempts_in_round(), outcome, draw)
        if wait is None:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = now + wait
        if sub.enabled and outcome.status_code == 410:
            events.append(sub.disable("the receiver answered 410 Gone", now))
        elif sub.enabled and now - sub.failing_since >= FAILING_FOR:
            events.append(sub.disable("every delivery attempt failed for 5 days", now))
        tx.update_subscription(sub)
    tx.update_delivery(delivery)
    tx.append_events(events)
    return True


# ---------------------------------------------------------------------------------------------------- the sender
@dataclass
class _Result:
    """An attempt made, waiting to be recorded; `done` says whether it was."""

    delivery: DeliveryRecord
    at: datetime
    outcome: Outcome
    draw: float
    done: asyncio.Future[bool]


class Sender:
    """Sends claimed deliveries, at most `concurrency` at a time (and `per_subscription` per subscription)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        worker_id: str,
        allow_private: bool,
        timeout_s: float = 15.0,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 32,
        per_subscription: int = 4,
        poll_interval: float = 1.0,
        draw: Callable[[], float] = random.random,
        resolver: Resolver | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker_id = worker_id
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.lease = lease
        self.concurrency = concurrency
        self.per_subscription = per_subscription
        self.poll_interval = poll_interval
        self.draw = draw
        self.resolver = resolver
        self._in_flight: dict[tuple[str, str], int] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()
        self._results: list[_Result] = []  # attempts made, waiting to be recorded
        self._recording = False  # a delivery is writing the batch now

    def wake(self) -> None:
        """Deliveries were made or redelivered in this process: look now. On the event loop."""
        self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._woken.clear()  # before the claim: a delivery that finishes while it runs wakes the nap below
            try:
                claimed = await self.run_once()
            except Exception:  # the store is down, say: try again after a nap
                log.exception("deliveries: claiming failed")
                claimed = 0
            if claimed:
                continue
            await _nap(self._woken, stop, self.poll_interval)
        await self.drain()

    async def run_once(self) -> int:
        """Claim what may go now (as much as there is room for) and start sending it; returns how many."""
        free = self.concurrency - len(self._running)
        if free <= 0:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
            return 1
        now = self.clock.now()
        until = now + self.lease
        busy = dict(self._in_flight)
        claimed = await self.store.system_write(
            lambda stx: stx.claim_deliveries(now, self.worker_id, until, free, busy, self.per_subscription)
        )
        for due in claimed:
            key = (due.delivery.tenant, due.delivery.subscription_id)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.create_task(self._deliver(due, key))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(claimed)

    async def drain(self) -> None:
        """Wait for the deliveries being sent (tests, and a graceful stop)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _deliver(self, due: DueDelivery, key: tuple[str, str]) -> None:
        try:
            await self.deliver(due)
        except Exception:  # the lease runs out and it is sent again: a bug here must not be lost, nor spin
            log.exception("deliveries: delivery %s (tenant %s) failed", due.delivery.id, due.delivery.tenant)
        finally:
            left = self._in_flight.get(key, 1) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)
            self._woken.set()  # room for one more, and the next of its instance may go now

    async def deliver(self, due: DueDelivery) -> None:
        """Send one claimed delivery and record the attempt (with those that finished meanwhile: one transaction
        per tenant for a batch, so a busy sender does not take a write per message)."""
        delivery = due.delivery
        at = self.clock.now()
        outcome = await self.attempt(due, at)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._results.append(_Result(delivery, at, outcome, self.draw(), done))
        if not self._recording:
            self._recording = True
            try:
                while self._results:
                    batch, self._results = self._results, []
                    await self._record(batch)
            finally:
                self._recording = False
        if not await done:
            log.info("deliveries: delivery %s was taken over while it was sent; attempt not recorded", delivery.id)

    async def _record(self, batch: list[_Result]) -> None:
        by_tenant: dict[str, list[_Result]] = {}
        for result in batch:
            by_tenant.setdefault(result.delivery.tenant, []).append(result)
        for tenant, results in by_tenant.items():

            def write(tx: Tx, results: list[_Result] = results) -> list[bool]:
                now = self.clock.now()
                return [record_attempt(tx, r.delivery, self.worker_id, r.at, r.outcome, now, r.draw) for r in results]

            try:
                saved = await self.store.write(tenant, write)
            except Exception as exc:  # each waiting delivery fails alike; their leases run out and they go again
                for r in results:
                    r.done.set_exception(exc)
                continue
            for r, ok in zip(results, saved, strict=True):
                r.done.set_result(ok)

    async def attempt(self, due: DueDelivery, at: datetime) -> Outcome:
        """One POST of the delivery, signed for `at`."""
        delivery = due.delivery
        began = time.monotonic()
        try:
            headers = signed_headers(due.secret, delivery.webhook_id, at, delivery.body)
            response = await send(
                "POST",
                due.url,
                headers=headers,
                content=delivery.body.encode(),
                timeout_s=self.timeout_s,
                max_response_bytes=MAX_RESPONSE_BYTES,
                allow_private=self.allow_private,
                max_redirects=0,
                resolver=self.resolver,
            )
        except OutboundError as exc:
            return Outcome(None, _ms(began), exc.reason)
        except Exception as exc:  # a secret that is not base64 (edited in the store), say
            return Outcome(None, _ms(began), f"could not send: {exc}")
        if response.is_success:
            return Outcome(response.status_code, response.elapsed_ms)
        text = response.body[:ERROR_TEXT].decode("utf-8", "replace").strip()
        error = f"the receiver answered {response.status_code}" + (f": {text}" if text else "")
        asked = retry.retry_after(response.headers) if response.status_code in (429, 503) else None
        return Outcome(response.status_code, response.elapsed_ms, error, asked)


def _ms(began: float) -> float:
    return round((time.monotonic() - began) * 1000, 1)


async def _nap(woken: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Until `woken` (cleared by the caller before it last looked for work), `stop`, or `timeout` seconds."""
    waits = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


# ---------------------------------------------------------------------------------------------------- together
class Deliveries:
    """The fan-out and the sender of one process, as the worker runs them."""

    def __init__(self, store: Store, clock: Clock, signal: OutboxSignal, sender: Sender, *, poll_interval: float):
        self.store = store
        self.clock = clock
        self.signal = signal
        self.sender = sender
        self.poll_interval = poll_interval
        self._cursors: dict[str, int] = {}  # how far this process last saw each tenant's fan-out
        self._quiet: set[str] = set()  # tenants with no enabled subscription at the last full look

    async def run(self, stop: asyncio.Event) -> None:
        sending = asyncio.create_task(self.sender.run(stop))
        loop = asyncio.get_running_loop()
        next_full = 0.0
        try:
            while not stop.is_set():
                full = loop.time() >= next_full
                if full:
                    next_full = loop.time() + self.poll_interval
                try:
                    busy = await self.fan_out_once(everything=full)
                except Exception:
                    log.exception("deliveries: the fan-out failed")
                    busy = False
                if not busy and not self._behind():
                    await _wait_signal(self.signal, stop, max(0.0, next_full - loop.time()))
                    await asyncio.sleep(COALESCE_S)  # a burst of commits: one fan-out for them all
        finally:
            await sending

    def _behind(self) -> bool:
        """A tenant with subscriptions has committed events this process has not fanned out."""
        return any(self.signal.head(t) > seen for t, seen in self._cursors.items() if t not in self._quiet)

    async def fan_out_once(self, everything: bool = True) -> bool:
        """Tenants whose events are past their cursor, fanned out; true when any delivery was made.

        `everything`: every tenant, as the store knows them (what `run` does once a poll interval). Otherwise
        only the tenants the outbox signal says moved and that had subscriptions at the last full look: a tenant
        without one costs a read a poll interval, whatever its traffic, and no write. Its cursor stays, and a
        subscription made or enabled later starts after the events already committed (`after_sequence`), so
        waiting for the next full look loses nothing."""
        if everything:
            heads = await self.store.system_read(lambda stx: stx.sequence_heads())
        else:
            heads = {t: self.signal.head(t) for t in self._cursors if t not in self._quiet}
        made = 0
        for tenant, head in heads.items():
            if head <= self._cursors.get(tenant, -1):
                continue
            if not await self.store.read(tenant, lambda tx: bool(tx.enabled_subscriptions())):
                self._cursors[tenant] = head
                self._quiet.add(tenant)
                continue
            self._quiet.discard(tenant)
            while True:
                reached, count, more = await self.store.write(tenant, partial(fan_out, now=self.clock.now()))
                self._cursors[tenant] = reached
                made += count
                if not more:
                    break
        if made:
            self.sender.wake()
        return made > 0


async def _wait_signal(signal: OutboxSignal, stop: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(signal.wait(timeout)), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
