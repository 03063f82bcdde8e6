"""The work queue: instances waiting for a person (a human action, a manual decision, an AI suggestion to confirm).

Claiming is one transaction that picks the oldest task nobody holds and marks it held with a lease (15 minutes by
default), so two people never get the same task while the lease holds; on PostgreSQL concurrent claims pass over
each other's rows (`SKIP LOCKED`) instead of queueing behind them. A task on a channel its contact opted out of is
never handed out: the claim moves it on (`opted_out`, or cancelled) and takes the next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..clock import Clock
from ..engine import steps
from ..errors import Conflict, Forbidden, NotFound
from ..models.access import Principal, Role
from ..models.instances import MOVABLE, WorkflowInstance
from ..models.tasks import Task, TaskQuery, node_summary
from ..store.base import Page, PageRequest, Store, TaskFilter, Tx
from .triggers import Reactions

LEASE = timedelta(minutes=15)
MAX_HELD_BY_VOLUNTEER = 5  # a task shows its contact: a volunteer sees a few at a time, never the whole queue
MAX_TURNED_AWAY = 100  # tasks one claim moves on or sets aside before it answers "none for now" (the next goes on)


def task_of(tx: Tx, instance: WorkflowInstance) -> Task:
    node_id = instance.current_node
    assert node_id is not None
    assert instance.task_since is not None
    node = instance.nodes[node_id]
    contact = tx.read_contact(instance.contact_id)  # the instance is locked: the contact is not (lock order)
    return Task.model_validate(
        {
            "instance_id": instance.id,
            "template_id": instance.template_id,
            "node_id": node_id,
            "node": node_summary(node),
            "outcomes": sorted(node.transitions),
            "contact": contact.model_dump(mode="json") if contact else None,
            "state": instance.state,
            "suggestion": instance.suggestion,
            "held_by": instance.held_by,
            "lease_expires_at": instance.lease_expires_at,
            "since": instance.task_since,
        }
    )


def _filter(query: TaskQuery, held_by: str | None = None) -> TaskFilter:
    return TaskFilter(query.action, query.template_id, query.county, query.tag, held_by)


class TaskService:
    def __init__(
        self, store: Store, clock: Clock, lease: timedelta = LEASE, reactions: Reactions | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease = lease
        self.reactions = reactions or Reactions()  # the automatic actions and channels, for a refused task's step

    def _next(self, tx: Tx, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        """The oldest open task whose contact may be reached now, in `tx`. On the way, a task whose contact refused
        its channel is moved on (`opted_out`, or cancelled), and one outside its contact's hours is set aside
        until they open."""
        for _ in range(MAX_TURNED_AWAY):
            instance = tx.next_open_task(where, now)
            if instance is None:
                return None
            ctx = self.reactions.context(tx, instance)
            step = steps.channel_refused(instance, now, ctx)
            if step is None:
                node = instance.nodes[instance.current_node or ""]
                opens = ctx.opens(getattr(node, "action", None), now)
                if opens <= now:
                    return instance
                step = steps.open_task_at(instance, opens, now)
            tx.update_instance(step.instance)
            tx.append_events(step.events)
        return None

    async def list(self, principal: Principal, query: TaskQuery, page: PageRequest) -> Page[Task]:
        """Oldest first. A volunteer sees the tasks it holds (a task shows its contact, which is theirs only then)."""
        held_by = principal.token_id if principal.role is Role.VOLUNTEER else None
        now = self.clock.now()

        def run(tx: Tx) -> Page[Task]:
            found = tx.list_tasks(_filter(query, held_by), now, page)
            return Page([task_of(tx, i) for i in found.items], found.next_cursor)

        return await self.store.read(principal.tenant, run)

    async def held(self, principal: Principal) -> Task | None:
        """The oldest task the caller holds now (whatever its role): what the volunteer screen shows again after a
        reload, before it claims another."""
        now = self.clock.now()

        def run(tx: Tx) -> Task | None:
            found = tx.list_tasks(TaskFilter(held_by=principal.token_id), now, PageRequest(limit=1)).items
            return task_of(tx, found[0]) if found else None

        return await self.store.read(principal.tenant, run)

    async def claim(self, principal: Principal, query: TaskQuery) -> Task | None:
        now = self.clock.now()

        def run(tx: Tx) -> Task | None:
            if principal.role is Role.VOLUNTEER:
                mine = TaskFilter(held_by=principal.token_id)
                if (
                    len(tx.list_tasks(mine, now, PageRequest(limit=MAX_HELD_BY_VOLUNTEER)).items)
                    >= MAX_HELD_BY_VOLUNTEER
                ):
                    raise Conflict(
                        f"you already hold {MAX_HELD_BY_VOLUNTEER} tasks, the most a volunteer may hold: "
                        "record their outcomes or give some back first"
                    )
            instance = self._next(tx, _filter(query), now)
            if instance is None:
                return None
            step = steps.claim_task(instance, principal.token_id, now + self.lease, now)
            tx.update_instance(step.instance)
            return task_of(tx, step.instance)

        return await self.store.write(principal.tenant, run)

    async def release(self, principal: Principal, instance_id: str) -> Task:
        now = self.clock.now()

        def run(tx: Tx) -> Task:
            instance = tx.get_instance(instance_id)
            if instance is None or instance.task_since is None or instance.status not in MOVABLE:
                raise NotFound(f"no task for instance {instance_id!r}")
            if not instance.held_by_token(instance.held_by or "", now):
                raise Conflict("the task is not held by anyone")
            if instance.held_by != principal.token_id and principal.role is Role.VOLUNTEER:
                raise Forbidden("a volunteer may give back only the tasks it holds")
            step = steps.release_task(instance, now, principal.token_id)
            tx.update_instance(step.instance)
            return task_of(tx, step.instance)

        return await self.store.write(principal.tenant, run)
