"""Moving running voters to a template's current version (api.md § Campaign work `migrate`).

The unfinished instances frozen at `from_version` are found a page at a time, in one order over every status (so
one whose status changes during the run is still met once). Each gets its new node: the node map's, else its own id
when the current version still has it, else none (it stays, counted as unmapped). Unless it is a dry run, it moves
in the batch's transaction: its frozen graph becomes the current version's, with an `instance_migrated` event
(`steps.migrate`). A dry run counts the same instances the same way, so its counts are what a real run moves when
nothing else changes in between. A run of more instances than `inline_limit` is a job (202), a batch per
transaction, like bulk enrolment; the version it moves to is fixed when it starts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from ..clock import Clock
from ..engine import steps
from ..errors import InvalidInput
from ..models.access import Principal
from ..models.instances import TERMINAL, WorkflowInstance
from ..models.jobs import Job, JobKind, JobRecord
from ..models.migration import NOT_STARTED, MigrateRequest, MigrationResult
from ..models.templates import WorkflowTemplate
from ..store.base import InstanceFilter, PageRequest, Store, Tx
from .instances import InstanceService, enrollable, template_snapshot
from .jobs import JobService


def _counts() -> defaultdict[str, defaultdict[str, int]]:
    return defaultdict(lambda: defaultdict(int))


@dataclass
class Tally:
    """What batches counted: moved old node → new node → n, unmapped node → n, instances looked at."""

    moved: defaultdict[str, defaultdict[str, int]] = field(default_factory=_counts)
    unmapped: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: int = 0

    def add(self, other: Tally) -> None:
        for old, targets in other.moved.items():
            for new, n in targets.items():
                self.moved[old][new] += n
        for node, n in other.unmapped.items():
            self.unmapped[node] += n
        self.seen += other.seen

    def result(self, dry_run: bool, to_version: str) -> MigrationResult:
        moved = {old: dict(sorted(targets.items())) for old, targets in sorted(self.moved.items())}
        unmapped = dict(sorted(self.unmapped.items()))
        return MigrationResult(moved=moved, unmapped=unmapped, dry_run=dry_run, to_version=to_version)

    @classmethod
    def of(cls, saved: dict[str, object]) -> Tally:
        found = cls()
        found.add_saved(saved)
        return found

    def add_saved(self, saved: dict[str, object]) -> None:
        moved = saved.get("moved")
        unmapped = saved.get("unmapped")
        for old, targets in (moved if isinstance(moved, dict) else {}).items():
            for new, n in (targets if isinstance(targets, dict) else {}).items():
                self.moved[str(old)][str(new)] += int(n)
        for node, n in (unmapped if isinstance(unmapped, dict) else {}).items():
            self.unmapped[str(node)] += int(n)


def _target(instance: WorkflowInstance, template: WorkflowTemplate, node_map: dict[str, str]) -> tuple[str, str | None]:
    """(the instance's node as counted, its node in the current version or None when it has none)."""
    old = instance.current_node
    if old is None:
        return NOT_STARTED, NOT_STARTED
    new = node_map.get(old, old)
    return old, new if new in template.nodes else None


class Migration:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        instances: InstanceService,
        jobs: JobService,
        *,
        batch_size: int = 500,
        inline_limit: int = 5_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.instances = instances
        self.jobs = jobs
        self.batch_size = batch_size
        self.inline_limit = inline_limit

    def _checked(self, tx: Tx, template_id: str, body: MigrateRequest) -> WorkflowTemplate:
        template = enrollable(tx, template_id)  # 404, or 422 when the current version cannot run
        if body.from_version == template.version:
            raise InvalidInput(f"from_version: {body.from_version} is the current version; nothing would move")
        if unknown := sorted(new for new in body.node_map.values() if new not in template.nodes):
            raise InvalidInput(
                f"node_map: {', '.join(unknown)} {'is not a node' if len(unknown) == 1 else 'are not nodes'} of "
                f"version {template.version}"
            )
        return template

    async def migrate(self, principal: Principal, template_id: str, body: MigrateRequest) -> MigrationResult | Job:
        """Inside the request when at most `inline_limit` instances are concerned, else a job (202)."""

        def count(tx: Tx) -> tuple[WorkflowTemplate, bool]:
            """The template, and whether the run is a job: more than `inline_limit` instances to look at, or
            more than ten times that to read through (most of them finished or moved already)."""
            template = self._checked(tx, template_id, body)
            concerned = read = 0
            cursor = None
            while concerned <= self.inline_limit and read <= 10 * self.inline_limit:
                page = tx.list_instances(InstanceFilter(template_id=template_id), PageRequest(500, cursor))
                read += len(page.items)
                concerned += sum(1 for i in page.items if _concerned(i, body))
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            return template, concerned > self.inline_limit or read > 10 * self.inline_limit

        template, large = await self.store.read(principal.tenant, count)
        params = {"template_id": template_id, "to_version": template.version, **body.model_dump(mode="json")}
        if large:
            return await self.jobs.queue(principal, JobKind.MIGRATE, params, None)
        total = Tally()
        cursor: str | None = ""
        while cursor is not None:
            run = partial(
                self.batch,
                template_id=template_id,
                body=body,
                cursor=cursor,
                actor=principal.token_id,
                to_version=template.version,
            )
            tally, cursor, _ = await self.store.write(principal.tenant, run)
            total.add(tally)
        if not body.dry_run:
            self.instances.notify()  # an instance entered a node whose work is due
        return total.result(body.dry_run, template.version)

    def batch(
        self,
        tx: Tx,
        *,
        template_id: str,
        body: MigrateRequest,
        cursor: str,
        actor: str,
        to_version: str,
        now: datetime | None = None,
    ) -> tuple[Tally, str | None, str]:
        """The next page of the template's instances after `cursor` (one order over every status, so an instance
        whose status changes meanwhile is still met once), counted and, unless a dry run, moved, in `tx`; the
        cursor after it (None at the end), and the version moved to. A template changed since the run began
        stops it (422): its instances would otherwise land on two versions."""
        now = now or self.clock.now()
        template = self._checked(tx, template_id, body)
        if template.version != to_version:
            raise InvalidInput(
                f"the template changed to version {template.version} while the migration to {to_version} ran; "
                "what moved stays moved: run it again"
            )
        page = tx.list_instances(
            InstanceFilter(template_id=template_id), PageRequest(limit=self.batch_size, cursor=cursor or None)
        )
        tally = Tally(seen=len(page.items))
        snapshot = template_snapshot(tx.tenant, template)
        if not body.dry_run:
            tx.put_snapshot(snapshot)
        for listed in page.items:
            if not _concerned(listed, body):
                continue
            instance = tx.get_instance(listed.id) if not body.dry_run else listed  # locked when it moves
            if instance is None or instance.template_version != body.from_version or instance.status in TERMINAL:
                continue
            old, new = _target(instance, template, body.node_map)
            if new is None:
                tally.unmapped[old] += 1
                continue
            tally.moved[old][new] += 1
            if body.dry_run:
                continue
            to_node = None if new == NOT_STARTED else new
            start = template.start_node or instance.start_node
            ctx = self.instances.context(tx, instance)
            made = steps.migrate(instance, template.nodes, start, template.version, to_node, now, actor, ctx)
            tx.update_instance(made.instance)
            tx.rebase_instance(instance.id, snapshot.id, template.version)
            tx.append_events(made.events)
        return tally, page.next_cursor, template.version

    # ---------------------------------------------------------------- as a job
    def job_batch(self, tx: Tx, job: JobRecord, now: datetime) -> bool:
        """The job's next batch, in `tx`: its counts and cursor move with the batch's writes. True when done."""
        params = dict(job.params)
        template_id = str(params.pop("template_id"))
        to_version = str(params.pop("to_version"))
        body = MigrateRequest.model_validate(params)
        actor = job.created_by or "system"
        tally, cursor, version = self.batch(
            tx, template_id=template_id, body=body, cursor=job.cursor or "", actor=actor, to_version=to_version, now=now
        )
        total = Tally.of(job.result)
        total.add(tally)
        job.result = total.result(body.dry_run, version).model_dump()
        job.progress.done += tally.seen
        job.cursor = cursor
        return cursor is None


def _concerned(instance: WorkflowInstance, body: MigrateRequest) -> bool:
    """Unfinished and frozen at the version the run moves from."""
    return instance.template_version == body.from_version and instance.status not in TERMINAL
