"""Due timers fired in batches: many timers of one tenant moved on in one write transaction.

Why: a due timer needs no I/O, no contact read up front and no timeline (its step is pure), so the read
transaction and the commit each timer used to cost were most of the worker's time when many fall due at once.
The guarantees are the one-by-one path's: each instance is read again under its lock and moved only if it is
still at the revision claimed (a stale one is skipped, the others applied), with its own events, and the batch
commits whole or not at all. A batch that fails is handed back, to be applied one by one, so one instance that
cannot move never holds back the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from ..clock import Clock
from ..engine import steps
from ..models.instances import MOVABLE, WorkflowInstance
from ..models.templates import ActionNode, WaitNode
from ..services.triggers import Reactions
from ..store.base import DueWork, Store, Tx

log = logging.getLogger("cbworkflow.worker")

PER_TRANSACTION = 100  # timers of one tenant per write transaction: a bounded time holding the locks
TimerStep = Callable[[WorkflowInstance, datetime, steps.Context], steps.Step]


def timer_step(instance: WorkflowInstance) -> TimerStep | None:
    """The step a due timer takes at the instance's node, or None when its work is not a timer's (any more)."""
    node = instance.nodes.get(instance.current_node or "")
    if isinstance(node, WaitNode):
        return steps.fire_timer
    if isinstance(node, ActionNode) and instance.waiting_for == "retry":
        return steps.come_back
    return None


class TimerBatches:
    """Fires claimed timers, a tenant's batch per write transaction; what it cannot fire it hands back."""

    def __init__(self, store: Store, clock: Clock, reactions: Reactions, worker_id: str) -> None:
        self.store = store
        self.clock = clock
        self.reactions = reactions
        self.worker_id = worker_id

    async def fire(self, claimed: Sequence[DueWork]) -> list[DueWork]:
        """Fire `claimed` (earliest first); returns the work to do one by one: what turned out not to be a
        timer's, and the batches whose transaction failed."""
        by_tenant: dict[str, list[DueWork]] = {}
        for work in claimed:
            by_tenant.setdefault(work.tenant, []).append(work)
        handed_back: list[DueWork] = []
        for tenant, works in by_tenant.items():
            for first in range(0, len(works), PER_TRANSACTION):
                batch = works[first : first + PER_TRANSACTION]
                apply = partial(self.apply, batch=batch, now=self.clock.now())
                try:
                    handed_back += await self.store.write(tenant, apply)
                except Exception:
                    log.warning("worker: a batch of %d timers failed; one by one now", len(batch), exc_info=True)
                    handed_back += batch
        return handed_back

    def apply(self, tx: Tx, batch: Sequence[DueWork], now: datetime) -> list[DueWork]:
        """In one transaction: each instance of `batch` locked, checked at its claimed revision, moved on."""
        others: list[DueWork] = []
        stale = 0
        found = {instance.id: instance for instance in tx.get_instances([work.instance_id for work in batch])}
        moved: list[WorkflowInstance] = []
        for work in batch:
            instance = found.get(work.instance_id)
            if instance is None or instance.revision != work.revision or instance.status not in MOVABLE:
                stale += 1  # moved, paused, cancelled or completed since the claim: this work is stale
                continue
            if instance.wake_at is None or instance.current_node is None:
                tx.release_work(work.instance_id, self.worker_id)
                continue
            step = timer_step(instance)
            if step is None:
                others.append(work)
                continue
            made = step(instance, now, self.reactions.context(tx, instance))
            moved.append(made.instance)
            tx.append_events(made.events)
        tx.update_instances(moved)
        if stale:
            log.info("worker: %d instances moved on since they were claimed; their timers dropped", stale)
        return others
