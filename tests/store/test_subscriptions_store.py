"""Webhook subscriptions and deliveries in the store, on every backend: records, the fan-out from the outbox, and
the senders' claim (in order per instance, held back only behind the same instance, leases, concurrency caps)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import test_store
from test_store import T0, contact, event, instance, run, system

from cbworkflow.errors import Conflict
from cbworkflow.ids import new_id
from cbworkflow.models.events import EventType
from cbworkflow.models.subscriptions import DeliveryAttempt, DeliveryRecord, DeliveryStatus, SubscriptionRecord
from cbworkflow.runtime.deliveries import CURSOR, fan_out
from cbworkflow.store.base import DueDelivery, PageRequest, Store, Tx

store = test_store.store
backend = test_store.backend


def subscription(
    tenant: str = "a", events: list[str] | None = None, after: int = 0, **fields: Any
) -> SubscriptionRecord:
    when = fields.pop("created_at", T0)
    return SubscriptionRecord(
        tenant=tenant,
        id=fields.pop("id", new_id()),
        url="http://hooks.example.org/in",
        events=events or ["*"],
        secret="whsec_" + "A" * 44,
        after_sequence=after,
        created_at=when,
        updated_at=when,
        **fields,
    )


def delivery(sub: SubscriptionRecord, sequence: int, key: str, **fields: Any) -> DeliveryRecord:
    return DeliveryRecord(
        tenant=sub.tenant,
        id=new_id(),
        subscription_id=sub.id,
        webhook_id=f"msg_{new_id()}",
        event_sequence=sequence,
        event_type="user_note",
        order_key=key,
        next_attempt_at=fields.pop("next_attempt_at", T0),
        body='{"type":"user_note"}',
        created_at=fields.pop("created_at", T0),
        **fields,
    )


def claim(
    store: Store,
    *,
    now: Any = T0,
    limit: int = 50,
    busy: dict[tuple[str, str], int] | None = None,
    per_subscription: int = 100,
    worker: str = "w1",
) -> list[DueDelivery]:
    found: list[DueDelivery] = system(
        store,
        lambda stx: stx.claim_deliveries(now, worker, now + timedelta(minutes=1), limit, busy or {}, per_subscription),
    )
    return found


def write_events(tx: Tx, n: int, types: tuple[EventType, ...] = (EventType.USER_NOTE,)) -> Any:
    cid = new_id()
    tx.insert_contact(contact(tx.tenant, cid=cid))
    made = instance(tx, cid)
    tx.append_events([event(made, types[i % len(types)]) for i in range(n)])
    return made


# ---------------------------------------------------------------------------------------------- records
def test_subscriptions_are_kept_per_tenant_and_listed_newest_first(store: Store) -> None:
    made = [subscription(created_at=T0 + timedelta(minutes=n)) for n in range(5)]

    def insert(tx: Tx) -> None:
        for record in made:
            tx.insert_subscription(record)

    run(store, "a", insert)
    assert run(store, "a", lambda tx: tx.get_subscription(made[0].id)) == made[0]
    assert run(store, "b", lambda tx: tx.get_subscription(made[0].id)) is None
    assert run(store, "b", lambda tx: tx.list_subscriptions(PageRequest())).items == []
    seen, cursor = [], None
    while True:
        page = run(store, "a", lambda tx, c=cursor: tx.list_subscriptions(PageRequest(2, c)), write=False)
        seen += [r.id for r in page.items]
        if not (cursor := page.next_cursor):
            break
    assert seen == [r.id for r in reversed(made)]

    changed = made[1].model_copy(update={"enabled": False, "disabled_reason": "off", "failure_count": 3})
    run(store, "a", lambda tx: tx.update_subscription(changed))
    assert run(store, "a", lambda tx: tx.get_subscription(made[1].id)) == changed
    assert [r.id for r in run(store, "a", lambda tx: tx.enabled_subscriptions())] == [
        r.id for r in made if r.id != made[1].id
    ]
    assert run(store, "b", lambda tx: tx.delete_subscription(made[2].id)) is False
    assert run(store, "a", lambda tx: tx.delete_subscription(made[2].id)) is True
    assert run(store, "a", lambda tx: tx.get_subscription(made[2].id)) is None


def test_deliveries_are_logged_newest_first_with_a_status_filter_and_go_with_their_subscription(store: Store) -> None:
    sub, other = subscription(), subscription()
    made = [delivery(sub, n, "i1", created_at=T0 + timedelta(seconds=n)) for n in range(1, 6)]
    made[1].status = DeliveryStatus.SUCCEEDED

    def insert(tx: Tx) -> None:
        tx.insert_subscription(sub)
        tx.insert_subscription(other)
        tx.insert_deliveries(made)
        tx.insert_deliveries([delivery(other, 1, "i1")])

    run(store, "a", insert)
    log = run(store, "a", lambda tx: tx.list_deliveries(sub.id, None, PageRequest(3)), write=False)
    assert [d.id for d in log.items] == [d.id for d in reversed(made)][:3]
    rest = run(store, "a", lambda tx: tx.list_deliveries(sub.id, None, PageRequest(3, log.next_cursor)), write=False)
    assert [d.id for d in rest.items] == [made[1].id, made[0].id]
    assert rest.next_cursor is None
    done = run(store, "a", lambda tx: tx.list_deliveries(sub.id, DeliveryStatus.SUCCEEDED, PageRequest()))
    assert [d.id for d in done.items] == [made[1].id]
    assert run(store, "b", lambda tx: tx.list_deliveries(sub.id, None, PageRequest())).items == []
    assert run(store, "b", lambda tx: tx.get_delivery(sub.id, made[0].id)) is None
    assert run(store, "a", lambda tx: tx.get_delivery(other.id, made[0].id)) is None  # not that subscription's

    attempt = DeliveryAttempt(at=T0, status_code=500, latency_ms=12.5, error="the receiver answered 500")
    changed = made[0].model_copy(update={"attempts": [attempt], "next_attempt_at": T0 + timedelta(seconds=5)})
    run(store, "a", lambda tx: tx.update_delivery(changed))
    assert run(store, "a", lambda tx: tx.get_delivery(sub.id, made[0].id)) == changed

    with pytest.raises(Conflict):  # one delivery per event and subscription
        run(store, "a", lambda tx: tx.insert_deliveries([delivery(sub, 3, "i1")]))

    run(store, "a", lambda tx: tx.delete_subscription(sub.id))
    assert run(store, "a", lambda tx: tx.list_deliveries(sub.id, None, PageRequest())).items == []
    assert [d.delivery.subscription_id for d in claim(store)] == [other.id]


# ---------------------------------------------------------------------------------------------- fan-out
def test_the_fan_out_makes_one_delivery_per_event_and_matching_subscription_and_moves_the_cursor(store: Store) -> None:
    run(store, "a", lambda tx: write_events(tx, 2))  # before any subscription: never sent
    everything = subscription(events=["*"], after=2)
    notes = subscription(events=["user_note"], after=2)
    tags = subscription(events=["tag_added"], after=2)
    off = subscription(events=["*"], after=2, enabled=False)
    run(store, "a", lambda tx: [tx.insert_subscription(s) for s in (everything, notes, tags, off)])
    inst = run(store, "a", lambda tx: write_events(tx, 4, (EventType.USER_NOTE, EventType.STATE_UPDATED)))
    run(store, "b", lambda tx: write_events(tx, 3))  # another tenant's events are its own

    assert run(store, "a", lambda tx: fan_out(tx, T0, limit=3)) == (5, 5, True)
    assert run(store, "a", lambda tx: fan_out(tx, T0, limit=3)) == (6, 1, False)
    assert run(store, "a", lambda tx: fan_out(tx, T0)) == (6, 0, False)  # nothing new: nothing twice
    assert run(store, "a", lambda tx: tx.outbox_cursor(CURSOR)) == 6

    def log(sub: SubscriptionRecord) -> list[tuple[int, str, str]]:
        page = run(store, "a", lambda tx: tx.list_deliveries(sub.id, None, PageRequest(100)), write=False)
        return sorted((d.event_sequence, d.event_type, d.order_key) for d in page.items)

    assert log(everything) == [
        (3, "user_note", inst.id),
        (4, "state_updated", inst.id),
        (5, "user_note", inst.id),
        (6, "state_updated", inst.id),
    ]
    assert [s for s, _, _ in log(notes)] == [3, 5]
    assert log(tags) == []
    assert log(off) == []
    body = run(store, "a", lambda tx: tx.list_deliveries(everything.id, None, PageRequest(100))).items[-1]
    assert (body.status, body.next_attempt_at, body.attempts) == (DeliveryStatus.PENDING, T0, [])
    assert body.webhook_id.startswith("msg_")


def test_a_tenant_without_subscriptions_moves_its_cursor_without_reading_events(store: Store) -> None:
    run(store, "a", lambda tx: write_events(tx, 7))
    assert run(store, "a", lambda tx: fan_out(tx, T0, limit=2)) == (7, 0, False)
    sub = subscription(after=7)
    run(store, "a", lambda tx: tx.insert_subscription(sub))
    run(store, "a", lambda tx: write_events(tx, 1))
    assert run(store, "a", lambda tx: fan_out(tx, T0)) == (8, 1, False)


def test_a_fan_out_that_fails_leaves_no_delivery_and_the_cursor_where_it_was(store: Store) -> None:
    sub = subscription()
    run(store, "a", lambda tx: tx.insert_subscription(sub))
    run(store, "a", lambda tx: write_events(tx, 3))

    def crashes(tx: Tx) -> None:
        fan_out(tx, T0)
        raise RuntimeError("the process died here")

    with pytest.raises(RuntimeError):
        run(store, "a", crashes)
    assert run(store, "a", lambda tx: tx.outbox_cursor(CURSOR)) == 0
    assert run(store, "a", lambda tx: tx.list_deliveries(sub.id, None, PageRequest())).items == []
    assert run(store, "a", lambda tx: fan_out(tx, T0)) == (3, 3, False)


# ---------------------------------------------------------------------------------------------- the claim
def test_only_the_head_of_each_instance_queue_is_claimed_and_a_failing_one_holds_back_only_its_own(
    store: Store,
) -> None:
    sub, other = subscription(), subscription()
    later = T0 + timedelta(minutes=5)
    first_of_1 = delivery(sub, 1, "i1", next_attempt_at=later)  # failing: waits for its retry
    rows = [
        first_of_1,
        delivery(sub, 2, "i1"),
        delivery(sub, 3, "i2"),
        delivery(sub, 4, "i2"),
        delivery(other, 1, "i1"),  # the same instance, another subscription: not held back
        delivery(sub, 5, "contact:c1"),
    ]

    def insert(tx: Tx) -> None:
        tx.insert_subscription(sub)
        tx.insert_subscription(other)
        tx.insert_deliveries(rows)

    run(store, "a", insert)
    claimed = claim(store)
    assert sorted((d.delivery.subscription_id == sub.id, d.delivery.event_sequence) for d in claimed) == [
        (False, 1),
        (True, 3),
        (True, 5),
    ]
    assert all(d.url == sub.url and d.secret == sub.secret for d in claimed)
    assert all(d.delivery.held_by == "w1" for d in claimed)
    assert claim(store, worker="w2") == []  # leased, and what is behind them waits

    # i2's head succeeds: the next of i2 may go, i1 still waits for its failing head.
    head = next(d.delivery for d in claimed if d.delivery.event_sequence == 3)
    done = head.model_copy(update={"status": DeliveryStatus.SUCCEEDED, "held_by": None, "lease_until": None})
    run(store, "a", lambda tx: tx.update_delivery(done))
    assert [d.delivery.event_sequence for d in claim(store, worker="w2")] == [4]

    # A lease that ran out is claimed again; the failing head, once due, goes before what is behind it.
    after_leases = later + timedelta(minutes=2)
    again = claim(store, now=after_leases, worker="w3")
    assert sorted((d.delivery.subscription_id == sub.id, d.delivery.event_sequence) for d in again) == [
        (False, 1),
        (True, 1),
        (True, 4),
        (True, 5),
    ]


def test_a_disabled_subscription_sends_nothing_and_caps_bound_what_is_claimed(store: Store) -> None:
    sub, off = subscription(), subscription(enabled=False)
    rows = [delivery(sub, n, f"i{n}") for n in range(1, 7)] + [delivery(off, 1, "i1")]

    def insert(tx: Tx) -> None:
        tx.insert_subscription(sub)
        tx.insert_subscription(off)
        tx.insert_deliveries(rows)

    run(store, "a", insert)
    assert len(claim(store, per_subscription=2, busy={("a", sub.id): 1})) == 1
    assert len(claim(store, per_subscription=10, limit=2)) == 2
    rest = claim(store, per_subscription=10)
    assert len(rest) == 3
    assert {d.delivery.subscription_id for d in rest} == {sub.id}
    assert claim(store, now=T0 + timedelta(hours=1)) != []  # leases ran out; `off` still sends nothing
    assert all(d.delivery.subscription_id == sub.id for d in claim(store, now=T0 + timedelta(hours=2)))


def test_tenants_do_not_see_each_others_deliveries_but_one_sender_serves_them_all(store: Store) -> None:
    a, b = subscription("a"), subscription("b")
    run(store, "a", lambda tx: (tx.insert_subscription(a), tx.insert_deliveries([delivery(a, 1, "i1")])))
    run(store, "b", lambda tx: (tx.insert_subscription(b), tx.insert_deliveries([delivery(b, 1, "i1")])))
    assert sorted(d.delivery.tenant for d in claim(store)) == ["a", "b"]
    assert run(store, "a", lambda tx: tx.get_subscription(b.id)) is None


def test_a_backlog_of_a_subscription_at_its_limit_does_not_starve_another(store: Store) -> None:
    busy, other = subscription(), subscription()
    backlog = [delivery(busy, n, f"i{n}") for n in range(1, 41)]  # forty instances, each due first
    waiting = delivery(other, 1, "i1", next_attempt_at=T0 + timedelta(seconds=1))

    def insert(tx: Tx) -> None:
        tx.insert_subscription(busy)
        tx.insert_subscription(other)
        tx.insert_deliveries([*backlog, waiting])

    run(store, "a", insert)
    now = T0 + timedelta(seconds=2)
    found = claim(store, now=now, limit=1, busy={("a", busy.id): 4}, per_subscription=4)
    assert [d.delivery.id for d in found] == [waiting.id]
