"""The storage interface every backend implements (SQLite, PostgreSQL, a folder of JSON files).

Services never see SQL. They hand the store a plain function of a transaction:

    contact = await store.write(tenant, lambda tx: tx.get_contact(contact_id))

`write` runs the function inside one transaction that holds the locks a read-modify-write needs (SQLite:
`BEGIN IMMEDIATE`; PostgreSQL: row locks; JSON files: per-entity locks) and commits only if it returns, so every
change (an instance moving and the events it appends) is applied whole or not at all. The function must not do
I/O of its own: it may be retried. `read` runs it on a consistent snapshot.

A transaction says whose it is. A `Tx` is bound to one tenant: nothing it returns or changes belongs to another,
and it has no method that could reach one. The few calls that span tenants (tenants themselves, token lookup by
hash, the worker's due work, counts for `/metrics`, purging old idempotency keys) are on `SystemTx`, which only
`system_read` / `system_write` hand out; `SystemTx.for_tenant` gives a tenant's `Tx` in the same transaction.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from ..models.access import Tenant, Token
from ..models.contacts import Contact
from ..models.events import Event
from ..models.instances import WorkflowInstance
from ..models.jobs import JobRecord
from ..models.subscriptions import DeliveryRecord, DeliveryStatus, SubscriptionRecord
from ..models.templates import TemplateHooks, TemplateVersion, TriggerError, WorkflowTemplate
from ..models.users import SessionRecord, User, UserRecord
from .filters import ContactFilter as ContactFilter  # services import the filters with the interface
from .filters import EventFilter as EventFilter
from .filters import InstanceFilter as InstanceFilter
from .filters import TaskFilter as TaskFilter
from .rules import RulesTx
from .snapshots import Snapshot as Snapshot  # backends import them with the interface
from .snapshots import SnapshotCache as SnapshotCache
from .tallies import Count

T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    """`limit` rows after the opaque `cursor` of the previous page."""

    limit: int = 50
    cursor: str | None = None


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class DueWork:
    """An instance whose automatic work (a timer, a model, a webhook, an executor) is due, claimed by a worker.
    `waiting_for` is the instance's at the claim: a hint of the kind of work, checked again when it is applied."""

    tenant: str
    instance_id: str
    revision: int
    waiting_for: str | None = field(default=None, compare=False)

    @property
    def timer(self) -> bool:
        """A wait's time, or an action's come-back-later: a step with no I/O, which the worker fires in batches."""
        return self.waiting_for in ("timer", "retry") or (self.waiting_for or "").startswith("event:")


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed by a sender, with what sending it needs from its subscription."""

    delivery: DeliveryRecord
    url: str
    secret: str


@dataclass
class TokenRecord:
    """A token as stored: the hash of its secret, never the secret."""

    token: Token
    secret_hash: str


@dataclass
class IdempotencyRecord:
    """An `Idempotency-Key` as stored: who first sent it, a hash of that request's body, and, once `done`, the
    answer. The rules around it (the 24-hour window, replays, clashes) are `services/idempotency.py`'s."""

    route: str
    key: str
    token_id: str
    request_hash: str
    created_at: datetime
    done: bool = False
    status_code: int | None = None
    body: str | None = None


class Tx(RulesTx, ABC):
    """One transaction, bound to `tenant`. Methods are synchronous: the store runs them off the event loop."""

    tenant: str

    # --- tokens of this tenant ---
    @abstractmethod
    def insert_token(self, record: TokenRecord) -> None: ...
    @abstractmethod
    def get_token_record(self, token_id: str) -> TokenRecord | None: ...
    @abstractmethod
    def list_tokens(self, page: PageRequest) -> Page[Token]: ...
    @abstractmethod
    def delete_token(self, token_id: str) -> bool: ...

    # --- people who sign in to the web pages, and their sessions (models/users.py) ---
    @abstractmethod
    def insert_user(self, record: UserRecord) -> None:
        """Raises Conflict (CLASH) when the id, or the email (by `email_key`), is already this tenant's."""

    @abstractmethod
    def get_user(self, user_id: str) -> UserRecord | None:
        """Locked inside `write`."""

    @abstractmethod
    def get_user_by_email(self, email_key: str) -> UserRecord | None: ...
    @abstractmethod
    def update_user(self, record: UserRecord) -> None:
        """Password, invitation, name, role; the email and id never change."""

    @abstractmethod
    def list_users(self, page: PageRequest) -> Page[User]:
        """This tenant's people, newest first."""

    @abstractmethod
    def delete_user(self, user_id: str) -> bool:
        """The person and every session of theirs; False when there was none."""

    @abstractmethod
    def insert_session(self, record: SessionRecord) -> None: ...
    @abstractmethod
    def get_session(self, session_id: str) -> SessionRecord | None:
        """As stored, expired or not: the caller compares `expires_at` and the secret's hash."""

    @abstractmethod
    def update_session(self, record: SessionRecord) -> None:
        """A new `expires_at` (a session in use is kept alive)."""

    @abstractmethod
    def delete_session(self, session_id: str) -> bool: ...

    # --- contacts ---
    @abstractmethod
    def get_contact(self, contact_id: str) -> Contact | None:
        """None when this tenant has no such contact (another tenant's id included); locked inside `write`."""

    @abstractmethod
    def read_contact(self, contact_id: str) -> Contact | None:
        """As `get_contact`, never locked and without `workflow_instance_ids` (left empty): what a step reads for its
        placeholders, expressions, consent and hours. A step locks its instance first; a contact's change (an
        opt-out, a goal) locks the contact first, then its instances: were the step to lock the contact too, the
        two could wait for each other."""

    @abstractmethod
    def get_contact_by_external_id(self, external_id: str) -> Contact | None:
        """The contact that holds `external_id` in this tenant (an id in another system); locked inside `write`."""

    @abstractmethod
    def insert_contact(self, contact: Contact) -> None: ...
    @abstractmethod
    def update_contact(self, contact: Contact) -> None:
        """Save every field of a stored contact; its external id moves with it."""

    @abstractmethod
    def delete_contact(self, contact_id: str) -> bool:
        """Delete the contact, its tags and its contact-level events (not its instances)."""

    @abstractmethod
    def list_contacts(self, where: ContactFilter, page: PageRequest) -> Page[Contact]: ...
    def list_contact_ids(self, where: ContactFilter, page: PageRequest) -> Page[str]:
        """The ids of the contacts of `list_contacts`' page, and its cursor (what a bulk enrolment walks); a
        backend may read only the ids."""
        found = self.list_contacts(where, page)
        return Page([contact.id for contact in found.items], found.next_cursor)

    @abstractmethod
    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """Substring search in name, email and phone digits, newest first. `query` has 3+ characters."""

    @abstractmethod
    def search_names(self, prefix: str, page: PageRequest) -> Page[Contact]:
        """The contacts whose `name_key` starts with `prefix` (already case-folded), by name then age: what
        one- and two-character queries find, through an index."""

    # --- templates ---
    @abstractmethod
    def get_template(self, template_id: str) -> WorkflowTemplate | None: ...
    @abstractmethod
    def insert_template(self, template: WorkflowTemplate) -> None: ...
    @abstractmethod
    def update_template(self, template: WorkflowTemplate) -> None:
        """Save the body and tags of a stored template; its `created_at` stays."""

    @abstractmethod
    def delete_template(self, template_id: str) -> bool:
        """Delete the template and its kept versions; instances keep their frozen copies."""

    @abstractmethod
    def list_templates(self, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]: ...
    @abstractmethod
    def insert_template_version(self, version: TemplateVersion) -> None: ...
    @abstractmethod
    def delete_template_version(self, template_id: str, version: str) -> None: ...
    @abstractmethod
    def list_template_versions(self, template_id: str, page: PageRequest) -> Page[TemplateVersion]: ...

    # --- instances ---
    @abstractmethod
    def put_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot unless one with its id exists (ids are content hashes)."""

    @abstractmethod
    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its frozen nodes, without its timeline. Inside `write`, the row is locked."""

    def get_instances(self, instance_ids: Sequence[str]) -> list[WorkflowInstance]:
        """Those of the instances found, as `get_instance` each (a backend may read them in one query)."""
        return [found for one in instance_ids if (found := self.get_instance(one)) is not None]

    @abstractmethod
    def insert_instance(self, instance: WorkflowInstance, snapshot_id: str) -> None: ...

    def insert_instances(self, instances: Sequence[WorkflowInstance], snapshot_id: str) -> None:
        """Insert new instances of one snapshot, as `insert_instance` each (a backend may use fewer statements)."""
        for instance in instances:
            self.insert_instance(instance, snapshot_id)

    @abstractmethod
    def update_instance(self, instance: WorkflowInstance) -> None:
        """Save every mutable field; `revision` must be one more than the stored one (else a bug: raises)."""

    def update_instances(self, instances: Sequence[WorkflowInstance]) -> None:
        """`update_instance` each (a backend may save those it read in this transaction in one statement)."""
        for instance in instances:
            self.update_instance(instance)

    @abstractmethod
    def rebase_instance(self, instance_id: str, snapshot_id: str, template_version: str) -> None:
        """After `update_instance` of a migrated instance: its frozen graph is now `snapshot_id`, of that version."""

    @abstractmethod
    def delete_instance(self, instance_id: str) -> bool:
        """Delete the instance and its events."""

    @abstractmethod
    def list_instances(self, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]: ...
    @abstractmethod
    def unfinished_instances_of_contact(self, contact_id: str) -> list[WorkflowInstance]: ...
    @abstractmethod
    def release_work(self, instance_id: str, worker_id: str) -> None:
        """Give back `worker_id`'s lease on the instance's due work (any change of the instance also ends it)."""

    # --- the work queue ---
    @abstractmethod
    def list_tasks(self, where: TaskFilter, now: datetime, page: PageRequest) -> Page[WorkflowInstance]:
        """Instances waiting for a person, oldest task first."""

    @abstractmethod
    def next_open_task(self, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        """The oldest task nobody holds (or whose holder's lease ran out), locked for this write; concurrent
        callers get different tasks (PostgreSQL: `SKIP LOCKED`)."""

    # --- events ---
    @abstractmethod
    def append_events(self, events: Sequence[Event]) -> None: ...
    @abstractmethod
    def instance_events(self, instance_id: str, page: PageRequest, newest_first: bool = False) -> Page[Event]: ...

    # --- the outbox: every event of the tenant, by `Event.sequence` (assigned as the transaction commits) ---
    @abstractmethod
    def events_after(
        self, after: int, limit: int, where: EventFilter | None = None, until: int | None = None
    ) -> list[Event]:
        """The tenant's events with a `sequence` above `after` (and at most `until`) that match `where`, in
        sequence order, at most `limit`. Committed sequences come in order without gaps (only events deleted with
        their record leave holes), so a reader that remembers the last one it saw misses nothing."""

    @abstractmethod
    def last_sequence(self) -> int:
        """The highest sequence the tenant's committed events hold (0 when there is none)."""

    @abstractmethod
    def outbox_cursor(self, name: str) -> int:
        """How far the reader `name` (the subscriptions' fan-out) has come: the last sequence it handled, 0 at
        first. Locked inside `write`, so two processes never handle the same events at once."""

    @abstractmethod
    def set_outbox_cursor(self, name: str, sequence: int) -> None: ...

    # --- campaign numbers ---
    @abstractmethod
    def workflow_counts(self, template_id: str, hours: tuple[int, int] | None) -> list[Count]:
        """The template's counts (`tallies.py`), each summed: all-time, or what happened in the hours [first,
        last) since 1970 (where instances are now is always the present)."""

    @abstractmethod
    def contact_events(self, contact_id: str, page: PageRequest) -> Page[Event]:
        """Every event of the contact's instances and the contact's own, newest first."""

    # --- jobs (models/jobs.py) ---
    @abstractmethod
    def insert_job(self, job: JobRecord) -> None: ...
    @abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None:
        """None when this tenant has no such job; locked inside `write`."""

    @abstractmethod
    def update_job(self, job: JobRecord) -> bool:
        """Save every field of a stored job but `id`, `tenant`, `kind` and `created_at`, if the stored `revision`
        is `job.revision - 1`; false (nothing saved) when it is not: another worker took the job over."""

    @abstractmethod
    def list_jobs(self, page: PageRequest) -> Page[JobRecord]:
        """The tenant's jobs, newest first."""

    # --- bulk work ---
    @abstractmethod
    def count_contacts(self, where: ContactFilter) -> int:
        """How many contacts `list_contacts(where, ...)` would list in all."""

    @abstractmethod
    def enrolled_contacts(self, template_id: str, contact_ids: Sequence[str]) -> set[str]:
        """Those of `contact_ids` that have an unfinished instance (pending, active, waiting or paused) of
        `template_id`: one indexed query for a whole batch."""

    # --- triggers and goals (services/triggers.py, services/goals.py) ---
    @abstractmethod
    def template_hooks(self) -> list[TemplateHooks]:
        """The triggers, goals and latest trigger errors of each of the tenant's templates that has triggers or
        goals, by id, without their graphs: a small indexed read, made by every change of a contact."""

    @abstractmethod
    def record_trigger_errors(self, template_id: str, errors: list[TriggerError]) -> None:
        """Replace the template's latest trigger errors; its body, version and `updated_at` stay as they are."""

    @abstractmethod
    def insert_enrolments(self, instances: Sequence[WorkflowInstance], snapshot_id: str) -> set[str]:
        """Insert new instances of one snapshot, but not one whose `enrol_key` an unfinished instance of the tenant
        holds (committed, or written by a concurrent transaction: this one waits for it); returns the ids inserted.
        An instance without an `enrol_key` is always inserted. The keys are a uniqueness rule of the store, so two
        processes enrolling one contact at once make one instance."""

    # --- contacts import (services/contact_import.py) ---
    @abstractmethod
    def find_contacts(
        self, *, ids: Sequence[str], external_ids: Sequence[str], emails: Sequence[str], phones: Sequence[str]
    ) -> list[Contact]:
        """Every contact of the tenant whose id, external id, email (`emails` are lower-case; compared without
        case) or `phone_e164` is one of those given: one indexed lookup for a batch of rows. Locked inside `write`."""

    def insert_contacts(self, contacts: Sequence[Contact]) -> None:
        """Insert new contacts, as `insert_contact` each (a backend may write them in fewer statements)."""
        for contact in contacts:
            self.insert_contact(contact)

    @abstractmethod
    def contacts_with_instances(self, contact_ids: Sequence[str]) -> set[str]:
        """Those of `contact_ids` that instances name (a deleted contact's instances are kept): ids a new contact
        may not take."""

    @abstractmethod
    def stage_job_rows(self, job_id: str, seq: int, items: Sequence[dict[str, Any]]) -> None:
        """Keep chunk `seq` of what a job will read (JSON objects), until `delete_job_rows`."""

    @abstractmethod
    def job_rows(self, job_id: str, seq: int) -> list[dict[str, Any]] | None:
        """Chunk `seq` of the job's staged rows; None when there is none (not staged, or deleted)."""

    @abstractmethod
    def delete_job_rows(self, job_id: str, seq: int | None = None) -> None:
        """Delete chunk `seq` of the job's staged rows, or every chunk when `seq` is None."""

    # --- webhook subscriptions and their deliveries (models/subscriptions.py) ---
    @abstractmethod
    def insert_subscription(self, record: SubscriptionRecord) -> None: ...
    @abstractmethod
    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """None when this tenant has no such subscription; locked inside `write`."""

    @abstractmethod
    def update_subscription(self, record: SubscriptionRecord) -> None:
        """Save every field of a stored subscription but `tenant`, `id` and `created_at`."""

    @abstractmethod
    def delete_subscription(self, subscription_id: str) -> bool:
        """Delete the subscription and all its deliveries."""

    @abstractmethod
    def list_subscriptions(self, page: PageRequest) -> Page[SubscriptionRecord]:
        """The tenant's subscriptions, newest first."""

    @abstractmethod
    def enabled_subscriptions(self) -> list[SubscriptionRecord]:
        """Every enabled subscription of the tenant (what the fan-out matches events against)."""

    @abstractmethod
    def insert_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """New deliveries; at most one per (subscription, event sequence), else `Conflict`."""

    @abstractmethod
    def get_delivery(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None:
        """None unless the subscription has that delivery; locked inside `write`."""

    @abstractmethod
    def update_delivery(self, record: DeliveryRecord) -> None:
        """Save its status, attempts, next attempt and lease."""

    @abstractmethod
    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> Page[DeliveryRecord]:
        """The subscription's deliveries (of that status, when given), newest first."""

    # --- idempotency keys (plain records: the rules are the service's) ---
    @abstractmethod
    def get_idempotency(self, route: str, key: str) -> IdempotencyRecord | None:
        """The key as stored, however old."""

    @abstractmethod
    def insert_idempotency(self, record: IdempotencyRecord) -> bool:
        """Store a new key; false when the key is stored already (a concurrent first use came first)."""

    @abstractmethod
    def finish_idempotency(self, route: str, key: str, status_code: int, body: str) -> None: ...
    @abstractmethod
    def delete_idempotency(self, route: str, key: str) -> None: ...


class SystemTx(ABC):
    """One transaction over the whole store, for the calls that span tenants. Only `Store.system_read` and
    `Store.system_write` hand one out; nothing a tenant's request asks for runs on it."""

    # --- tenants ---
    @abstractmethod
    def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    @abstractmethod
    def insert_tenant(self, tenant: Tenant) -> None: ...
    @abstractmethod
    def count_tenants(self) -> int: ...
    @abstractmethod
    def list_tenants(self, page: PageRequest) -> Page[Tenant]:
        """Every tenant, newest first."""

    @abstractmethod
    def for_tenant(self, tenant: str) -> Tx:
        """`tenant`'s transaction, inside this one (a new tenant and its first token are written together)."""

    # --- authentication ---
    @abstractmethod
    def find_token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...
    @abstractmethod
    def find_users_by_email(self, email_key: str, limit: int) -> list[UserRecord]:
        """Everyone who signs in with this address, in any tenant (an address may serve several campaigns): at
        most `limit`, oldest first."""

    # --- the worker's due work ---
    @abstractmethod
    def claim_due(
        self, now: datetime, worker_id: str, lease_until: datetime, limit: int, others: int | None = None
    ) -> list[DueWork]:
        """Claim up to `limit` instances whose `wake_at` has come and whose work no live lease holds, earliest
        first; each claimed one is leased to `worker_id` until `lease_until`. Two workers never get the same one
        while its lease holds (PostgreSQL: `FOR UPDATE SKIP LOCKED`). With `others`, at most that many of them
        are work other than a timer (`DueWork.timer`): a worker takes only the slow work it can start at once."""

    @abstractmethod
    def next_wake(self, now: datetime) -> datetime | None:
        """When the earliest unclaimed due work comes (may be in the past), or None when there is none."""

    # --- the worker's jobs ---
    @abstractmethod
    def claim_job(self, now: datetime, worker_id: str, lease_until: datetime) -> JobRecord | None:
        """The oldest unfinished job that no live lease holds (`queued`, or `running` with `lease_until` past),
        leased to `worker_id` until `lease_until`: saved `running`, `held_by` set, `started_at` set if unset,
        `revision` one more. Two workers never get the same job while its lease holds (PostgreSQL:
        `FOR UPDATE SKIP LOCKED`). None when there is no such job."""

    # --- webhook deliveries ---
    @abstractmethod
    def claim_deliveries(
        self,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        limit: int,
        in_flight: Mapping[tuple[str, str], int],
        per_subscription: int,
    ) -> list[DueDelivery]:
        """Claim up to `limit` deliveries that may be sent now, earliest due first, each leased to `worker_id`
        until `lease_until`. Eligible: pending, due, no live lease, its subscription enabled, and no earlier
        pending delivery (lower event sequence) of the same subscription and order key, so one instance's
        messages go out one at a time and in order. A subscription with `in_flight[(tenant, id)]` deliveries
        being sent gets at most `per_subscription` minus that many. Two senders never get the same delivery while
        its lease holds (PostgreSQL: `FOR UPDATE SKIP LOCKED`)."""

    # --- the outbox ---
    @abstractmethod
    def sequence_heads(self) -> dict[str, int]:
        """Every tenant's last committed event sequence (tenants with no event left out): what a process polls to
        learn that another one committed events."""

    # --- maintenance ---
    @abstractmethod
    def count_instances_by_status(self) -> dict[str, int]:
        """How many instances are in each status, over every tenant (`/metrics`)."""

    @abstractmethod
    def purge_idempotency(self, before: datetime) -> int:
        """Forget keys stored before `before`, in every tenant; returns how many."""

    @abstractmethod
    def purge_sessions(self, before: datetime) -> int:
        """Forget sessions whose `expires_at` is before `before`, in every tenant; returns how many."""


# What every backend answers when a write breaks a unique key, and when the store cannot be reached.
CLASH = "the change clashes with an existing record (a duplicate id, external id or key)"
UNAVAILABLE = "the database is busy or unavailable; try again"


class Store(ABC):
    """The async face of a backend: runs transaction functions on its threads, never on the event loop."""

    async def read(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await self._off_loop(False, partial(self.run_tenant, tenant, fn, False))

    async def write(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await self._off_loop(True, partial(self.run_tenant, tenant, fn, True))

    async def system_read(self, fn: Callable[[SystemTx], T]) -> T:
        return await self._off_loop(False, partial(self.run_system, fn, False))

    async def system_write(self, fn: Callable[[SystemTx], T]) -> T:
        return await self._off_loop(True, partial(self.run_system, fn, True))

    def on_commit(self, listener: Callable[[dict[str, int]], None]) -> None:
        """Call `listener` with `{tenant: last sequence}` after every commit that wrote events, on the committing
        thread (the outbox's in-process wake-up: `runtime/outbox.py`). Never for a transaction that rolled back."""
        self.__dict__.setdefault("_commit_listeners", []).append(listener)

    def _committed(self, heads: dict[str, int]) -> None:
        for listener in self.__dict__.get("_commit_listeners", ()):
            listener(heads)

    async def migrate(self) -> list[int]:
        """Create or upgrade the schema; return the migration versions applied."""
        return await self._off_loop(True, self.migrate_sync)

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""
        await self._off_loop(False, self.ping_sync)

    async def _off_loop(self, writing: bool, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.threads(writing), work)

    @abstractmethod
    def threads(self, writing: bool) -> Executor:
        """The threads that run reads (`writing` false) or writes."""

    @abstractmethod
    def run_tenant(self, tenant: str, fn: Callable[[Tx], T], writing: bool) -> T:
        """Run `fn` on a `Tx` of `tenant` in one transaction, on the calling thread."""

    @abstractmethod
    def run_system(self, fn: Callable[[SystemTx], T], writing: bool) -> T:
        """Run `fn` on a `SystemTx` in one transaction, on the calling thread."""

    @abstractmethod
    def migrate_sync(self) -> list[int]: ...

    @abstractmethod
    def ping_sync(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for logs (no secrets)."""
