"""The worker: runs the automatic part of workflows (timers, AI decisions, webhooks, executors) when it is due.

Durability comes from the store, not from memory: an instance whose work is due has `wake_at` set, in the same
transaction that put it at its node. A worker claims due instances with a lease (`Tx.claim_due`: PostgreSQL
`FOR UPDATE SKIP LOCKED`), does the slow part (a model, an HTTP call) outside any transaction, then applies the
result in one transaction that first checks the instance is still at the revision it claimed. So:
- any number of workers never apply the same step twice (the second finds a new revision and drops its result);
- a worker killed while holding work loses nothing: the lease runs out and another worker takes the work over;
- a paused, cancelled or already-moved instance is never advanced by stale work (its revision moved on, and a
  paused instance is not due);
- an action that reaches the contact (a text, an email) is sent only after a write transaction that re-reads the
  contact's consent with the contact's row locked and records `action_started`: an opt-out committed before that
  transaction wins (the step takes `opted_out`, or the instance is cancelled), one committed after it finds the
  message already on its way.
Due timers, which need no I/O, are fired in batches: many of a tenant in one write transaction, each still checked
at its claimed revision (`runtime/timers.py`). It sleeps until the next due time (at most `poll_interval`), and
`wake()` rouses it at once when this process made new due work.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from ..clock import Clock
from ..engine import caps, steps
from ..models.consent import Channel
from ..models.events import EventType
from ..models.instances import MOVABLE, WorkflowInstance
from ..models.templates import EMIT_EVENT, ActionNode, AIRule, DecisionNode, WaitNode, WebhookNode
from ..services.triggers import Reactions
from ..store.base import DueWork, PageRequest, Store, Tx
from ..validation import host_from_placeholder
from .ai import AIDecision
from .jobs import JobRunner
from .timers import TimerBatches
from .work import ActionRequest, ActionResult, DecisionRequest, WebhookCall

log = logging.getLogger("cbworkflow.worker")

DEFAULT_LEASE = timedelta(minutes=5)  # longer than the slowest piece of work (a webhook with all its retries)
BATCH = 200  # claimed in one query: timers fired in batches, slow work only as many as can start


class Handlers(Protocol):
    """The slow part of each kind of work, given all it needs (`runtime.work`); injected so tests run without
    network (and the engine stays pure)."""

    async def decide(self, request: DecisionRequest) -> AIDecision: ...

    async def call_webhook(self, call: WebhookCall) -> ActionResult: ...

    async def run_action(self, request: ActionRequest) -> ActionResult: ...

    async def close(self) -> None:
        """Let go of clients (the model's HTTP client) when the worker stops."""


def _webhook_call(node: WebhookNode, rendered: dict[str, Any], visit: str) -> WebhookCall:
    """The call a webhook node makes, from its rendered URL, headers and body."""
    return WebhookCall(
        url=rendered["url"],
        method=node.webhook_method,
        headers=rendered["headers"],
        body=rendered["body"],
        timeout_s=node.timeout_s,
        max_attempts=node.max_attempts,
        idempotency_key=visit,
        outcomes=sorted(node.transitions),
    )


def _action_request(
    instance: WorkflowInstance, node: ActionNode, config: Any, contact: dict[str, Any] | None, visit: str
) -> ActionRequest:
    """The run an action node asks of its executor, from its rendered action_config."""
    return ActionRequest(
        action=node.action or "",
        config=config if isinstance(config, dict) else {},
        contact=contact or {},
        instance_id=instance.id,
        node_id=instance.current_node or "",
        idempotency_key=visit,
        outcomes=sorted(node.transitions),
    )


def _raw_url(node: WebhookNode | ActionNode) -> str:
    """The URL a webhook node or a webhook action calls, as the template wrote it (before placeholders)."""
    url = node.webhook_url if isinstance(node, WebhookNode) else node.action_config.get("url")
    return url if isinstance(url, str) else ""


class Worker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        handlers: Handlers,
        *,
        automatic_actions: frozenset[str] = frozenset(),
        poll_interval: float = 1.0,
        lease: timedelta = DEFAULT_LEASE,
        concurrency: int = 8,
        worker_id: str | None = None,
        jobs: Callable[[str], JobRunner] | None = None,
        reactions: Reactions | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.handlers = handlers
        self.automatic_actions = automatic_actions
        self.reactions = reactions or Reactions(automatic_actions)  # what emit_event's events make templates do
        self.poll_interval = poll_interval
        self.lease = lease
        self.id = worker_id or f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
        self.timers = TimerBatches(store, clock, self.reactions, self.id)
        self.concurrency = concurrency
        self._woken = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.jobs = jobs(self.id) if jobs else None  # one job at a time, beside the instances' work
        self._job: asyncio.Task[bool] | None = None
        self._look_for_jobs_at = 0.0  # loop time of the next look for a job (at most one look per poll)
        # Loops that run beside the instances' work until `stop` (the webhook deliveries: runtime/deliveries.py).
        self.companions: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []

    def wake(self) -> None:
        """New due work in this process: look now instead of at the next poll. Safe from any thread."""
        self._look_for_jobs_at = 0.0  # a job may have been queued: look at once
        try:
            loop = self._loop
        except AttributeError:
            return
        loop.call_soon_threadsafe(self._woken.set)

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        log.info("worker %s started", self.id)
        beside = [asyncio.create_task(companion(stop)) for companion in self.companions]
        while not stop.is_set():
            self._take_up_a_job(stop)
            try:
                claimed = await self.run_once()
            except Exception:  # the store is down, say: keep the process, try again after a nap
                log.exception("worker: claiming due work failed")
                claimed = 0
            if claimed:
                continue  # there may be more
            await self._nap(stop)
        if self._job is not None:
            await asyncio.gather(self._job, return_exceptions=True)
        await self.drain()
        for done in await asyncio.gather(*beside, return_exceptions=True):
            if isinstance(done, BaseException):
                log.error("worker: a loop beside the work failed", exc_info=done)
        await self.handlers.close()
        log.info("worker %s stopped", self.id)

    def _take_up_a_job(self, stop: asyncio.Event) -> None:
        """Start the next job, unless one runs: it runs as a task of its own, a batch per transaction."""
        if self.jobs is None or (self._job is not None and not self._job.done()):
            return
        now = self._loop.time()
        if now < self._look_for_jobs_at:
            return
        self._look_for_jobs_at = now + self.poll_interval
        self._job = asyncio.create_task(self.jobs.run_next(stop))
        self._job.add_done_callback(self._job_ended)

    def _job_ended(self, done: asyncio.Task[bool]) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:  # the store failed while claiming, say: the next look tries again
            log.error("worker: taking up a job failed", exc_info=done.exception())
        elif done.result():
            self._look_for_jobs_at = 0.0  # it ran one: there may be another
            self._woken.set()

    async def _nap(self, stop: asyncio.Event) -> None:
        now = self.clock.now()
        try:
            nxt = await self.store.system_read(lambda stx: stx.next_wake(now))
        except Exception:
            log.exception("worker: reading the next due time failed")
            nxt = None
        delay = self.poll_interval if nxt is None else min(self.poll_interval, (nxt - now).total_seconds())
        if delay <= 0:
            return
        self._woken.clear()
        waits = [asyncio.ensure_future(self._woken.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def run_once(self) -> int:
        """Claim due work in one query and do it: timers fired here, in batches (`runtime/timers.py`); slow work
        (a model, a webhook, an executor) started, at most `concurrency` items at a time. Returns how many.

        Slow work is claimed only when it can start at once, so a busy worker leaves the rest to other workers."""
        free = max(0, self.concurrency - len(self._running))
        now = self.clock.now()
        until = now + self.lease
        claimed = await self.store.system_write(lambda stx: stx.claim_due(now, self.id, until, BATCH, free))
        if not claimed and free == 0:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
            return 1
        slow = [work for work in claimed if not work.timer]
        timers = [work for work in claimed if work.timer]
        if timers:
            slow += await self.timers.fire(timers)
        for work in slow:
            task = asyncio.create_task(self._run_item(work))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(claimed)

    async def drain(self) -> None:
        """Wait for the work started to finish (tests, and a graceful stop)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run_item(self, work: DueWork) -> None:
        try:
            await self.process(work)
        except Exception:
            # The lease runs out and the work is tried again: a bug here must not be lost, nor spin.
            log.exception("worker: work on instance %s (tenant %s) failed", work.instance_id, work.tenant)
        self._woken.set()  # what it did may have made more work due (the next node's)

    # ------------------------------------------------------------------ one piece of work
    async def process(self, work: DueWork) -> None:
        from ..engine.render import render, render_call

        def load(tx: Tx) -> tuple[WorkflowInstance | None, dict[str, Any] | None, str | None]:
            instance = tx.get_instance(work.instance_id)
            if instance is None:
                return None, None, None
            contact = tx.get_contact(instance.contact_id)
            # The visit is named by its node_entered event, so notes or tags added meanwhile do not change the key.
            recent = tx.instance_events(instance.id, PageRequest(limit=50), newest_first=True).items
            entered = [e for e in recent if e.type is EventType.NODE_ENTERED][:1]
            return instance, contact.model_dump(mode="json") if contact else None, entered[0].id if entered else None

        if work.timer and not await self._fire_one(work):
            return  # fired (or stale): no read needed, a timer's step takes neither the contact nor the timeline
        instance, contact, last_event = await self.store.read(work.tenant, load)
        if (
            instance is None
            or instance.revision != work.revision
            or instance.status not in MOVABLE
            or instance.wake_at is None
            or instance.current_node is None
        ):
            await self._release(work)
            return
        node = instance.nodes[instance.current_node]
        data = steps.Context(self.automatic_actions, lambda: contact, self.reactions.channels).placeholders(instance)
        visit = f"{instance.id}-{instance.current_node}-{last_event or work.revision}"
        started = self.clock.now()
        if isinstance(node, WaitNode):
            await self._apply(work, steps.fire_timer)
        elif isinstance(node, ActionNode) and instance.waiting_for == "retry":
            await self._apply(work, steps.come_back)
        elif isinstance(node, DecisionNode):
            rule = steps.parse_rule(node)
            if not isinstance(rule, AIRule):
                await self._release(work)
                return
            prompt = await asyncio.to_thread(render, rule.prompt, data)
            request = DecisionRequest(prompt=prompt, model=rule.model, outcomes=sorted(node.transitions))
            answer = await self.handlers.decide(request)
            details = answer.event_data()
            await self._apply(work, lambda i, now, ctx: steps.ai_decided(i, answer.outcome, details, rule, now, ctx))
        elif isinstance(node, (WebhookNode, ActionNode)) and host_from_placeholder(_raw_url(node)):
            refused = ActionResult(
                None, ok=False, error="the call's host comes from a placeholder; only the path and query may"
            )
            await self._finish(work, refused, started)
        elif isinstance(node, WebhookNode):
            # One output budget for the URL, the headers and the body together, rendered off the event loop.
            raw = {"url": node.webhook_url or "", "headers": node.webhook_headers, "body": node.webhook_body}
            call = await asyncio.to_thread(render_call, raw, data)
            result = await self.handlers.call_webhook(_webhook_call(node, call, visit))
            await self._finish(work, result, started)
        elif isinstance(node, ActionNode) and node.action == EMIT_EVENT:  # built in, no I/O: in the step's transaction
            config = await asyncio.to_thread(render_call, node.action_config, data)
            details = {"started_at": started.isoformat()}
            await self._apply(work, None, in_tx=partial(self._emit, config=config, details=details))
        elif isinstance(node, ActionNode) and node.action in self.automatic_actions:
            config = await asyncio.to_thread(render_call, node.action_config, data)
            channel = self.reactions.channels.get(node.action or "")
            if channel is not None:
                allowed = await self._may_send(work, instance.contact_id, node.action or "", channel.value)
                if not allowed:
                    return
            result = await self.handlers.run_action(_action_request(instance, node, config, contact, visit))
            await self._finish(work, result, started, started_recorded=channel is not None)
        else:
            # Due work this worker cannot do: an action whose executor another process has (CBW_EXECUTORS differs
            # between processes). Keep the lease, so it is tried again when the lease ends, not in a tight loop.
            log.warning(
                "worker: instance %s is due at node %r, which this worker has no executor for; retrying after %s",
                work.instance_id,
                instance.current_node,
                self.lease,
            )

    async def _fire_one(self, work: DueWork) -> bool:
        """A timer on its own (its batch failed): True when it turned out not to be a timer's work."""
        now = self.clock.now()
        return bool(await self.store.write(work.tenant, lambda tx: self.timers.apply(tx, batch=[work], now=now)))

    async def _may_send(self, work: DueWork, contact_id: str, action: str, channel: str) -> bool:
        """Just before an action reaches the contact: its consent read again in a write transaction that locks the
        contact's row, then the instance's (the order an opt-out locks them in), so the opt-out's transaction and
        this one are in one order. Refused: the instance takes `opted_out` or is cancelled, here. Outside the
        contact hours (a clock moved, a contact's time zone changed): it waits for them, here. Allowed:
        `action_started` is recorded, and the caller sends."""
        now = self.clock.now()

        def run(tx: Tx) -> bool:
            contact = tx.get_contact(contact_id)
            instance = tx.get_instance(work.instance_id)
            if instance is None or instance.revision != work.revision or instance.status not in MOVABLE:
                return False  # moved, paused or cancelled meanwhile
            snapshot = contact.model_dump(mode="json") if contact else None
            rules = partial(tx.contact_rules, instance.template_id)
            ctx = steps.Context(self.automatic_actions, lambda: snapshot, self.reactions.channels, rules)
            later = steps.channel_refused(instance, now, ctx)
            if later is None:
                until, reason = self._reachable(tx, ctx, contact_id, action, Channel(channel), now)
                if until > now:
                    later = steps.hold(instance, until, reason, now)
            if later is not None:
                tx.update_instance(later.instance)
                tx.append_events(later.events)
                return False
            tx.append_events(steps.sending(instance, channel, now))
            tx.record_send(contact_id, channel, now)
            return True

        return await self.store.write(work.tenant, run)

    @staticmethod
    def _reachable(
        tx: Tx, ctx: steps.Context, contact_id: str, action: str, channel: Channel, now: datetime
    ) -> tuple[datetime, str]:
        """When a send may reach the contact (`now`, or later) and what holds it back: the contact hours in their
        local time, or a frequency cap over their recent sends (read here, under the contact's lock)."""
        span = caps.window(ctx.rules.caps, channel)
        sends = tx.sends_since(contact_id, channel.value, now - span) if span is not None else []
        at, reason = now, "contact_hours"
        for _ in range(len(ctx.rules.caps) + 2):  # each turn passes a cap or an opening; they settle quickly
            opens = ctx.opens(action, at)
            if opens > at:
                reason = "contact_hours"
            free = caps.released(ctx.rules.caps, channel, sends, opens)
            if free == opens:
                return opens, reason
            at, reason = free, "frequency_cap"
        return at, reason  # the last hold found; the worker checks again when it comes

    async def _finish(
        self, work: DueWork, result: ActionResult, started: datetime, *, started_recorded: bool = False
    ) -> None:
        details = {**result.details(), "started_at": started.isoformat()}
        await self._apply(
            work,
            lambda i, now, ctx: steps.action_finished(
                i, result.outcome, details, now, ctx, started_recorded=started_recorded
            ),
        )

    def _emit(
        self,
        tx: Tx,
        instance: WorkflowInstance,
        now: datetime,
        ctx: steps.Context,
        *,
        config: Any,
        details: dict[str, Any],
    ) -> None:
        from ..executors.event import emit_step

        emit_step(tx, self.reactions, instance, config, details, now, ctx)  # the worker looks again after each item

    async def _apply(
        self,
        work: DueWork,
        step: Callable[[WorkflowInstance, datetime, steps.Context], steps.Step] | None,
        in_tx: Callable[[Tx, WorkflowInstance, datetime, steps.Context], None] | None = None,
    ) -> None:
        """Apply `step` if the instance is still at the revision claimed; or let `in_tx` apply it, and more, in
        the same transaction (emit_event)."""
        now = self.clock.now()

        def run(tx: Tx) -> bool:
            instance = tx.get_instance(work.instance_id)
            if instance is None or instance.revision != work.revision or instance.status not in MOVABLE:
                return False  # someone moved, paused, cancelled or completed it meanwhile: this work is stale
            ctx = self.reactions.context(tx, instance)
            if in_tx is not None:
                in_tx(tx, instance, now, ctx)
                return True
            assert step is not None
            made = step(instance, now, ctx)
            tx.update_instance(made.instance)
            tx.append_events(made.events)
            return True

        if not await self.store.write(work.tenant, run):
            log.info("worker: instance %s moved on while its work ran; result dropped", work.instance_id)

    async def _release(self, work: DueWork) -> None:
        await self.store.write(work.tenant, lambda tx: tx.release_work(work.instance_id, self.id))
