"""How the pieces are put together: the store, the services and the worker, from the settings.

The web app's lifespan, the CLI, the tests and the benchmarks all build them here, so none of them needs the web
app to get a working engine.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .clock import Clock
from .models.access import Principal, Role
from .models.jobs import JobKind
from .models.templates import TemplateCreate
from .runtime.deliveries import Deliveries, Sender
from .runtime.handlers import DefaultHandlers, automatic_actions
from .runtime.jobs import JobRunner
from .runtime.outbox import OutboxSignal
from .runtime.worker import Handlers, Worker
from .services.access import DEFAULT_TENANT, AccessService
from .services.bulk import BulkEnrolment
from .services.consent import ConsentService
from .services.contact_import import ContactImport
from .services.contact_rules import TenantSettingsService
from .services.contacts import ContactService
from .services.custom_events import EventService
from .services.diagrams import DiagramService
from .services.idempotency import IdempotencyService
from .services.inbound_sms import InboundSms
from .services.instances import InstanceService
from .services.jobs import JobService
from .services.migration import Migration
from .services.sessions import SessionService
from .services.simulation import SimulationService
from .services.stats import StatsService
from .services.stream import EventStream
from .services.subscriptions import SubscriptionService
from .services.tasks import TaskService
from .services.templates import TemplateService
from .services.triggers import Reactions
from .services.users import UserService
from .settings import Settings
from .store import open_store
from .store.base import Store

log = logging.getLogger("cbworkflow")


@dataclass
class Services:
    """Everything a request, a command or the worker may need, built once."""

    settings: Settings
    store: Store
    clock: Clock
    access: AccessService
    contacts: ContactService
    templates: TemplateService
    instances: InstanceService
    tasks: TaskService
    idempotency: IdempotencyService
    jobs: JobService
    stats: StatsService
    diagrams: DiagramService
    bulk: BulkEnrolment
    imports: ContactImport
    subscriptions: SubscriptionService
    outbox: OutboxSignal  # heard only once started (`await services.outbox.start()`): by the app and the worker
    stream: EventStream
    reactions: Reactions
    events: EventService
    users: UserService
    sessions: SessionService
    consent: ConsentService
    tenant_settings: TenantSettingsService
    simulation: SimulationService
    migration: Migration
    inbound_sms: InboundSms


SYSTEM = Principal(token_id="system", tenant=DEFAULT_TENANT, role=Role.SUPERADMIN, name="system")


async def build_services(settings: Settings, store: Store | None = None, clock: Clock | None = None) -> Services:
    """Open and migrate the store, then make the services. Used by the app, the CLI and tests."""
    store = store or open_store(settings)
    clock = clock or Clock()
    await store.migrate()
    automatic = automatic_actions(settings)
    channels = settings.channels
    instances = InstanceService(store, clock, automatic, channels)
    # instances.notify: the worker, once made
    reactions = Reactions(automatic, wake=lambda: instances.notify(), channels=channels)
    jobs = JobService(store, clock)
    bulk = BulkEnrolment(
        store,
        clock,
        instances,
        jobs,
        batch_size=settings.job_batch_size,
        inline_limit=settings.bulk_inline_limit,
    )
    outbox = OutboxSignal(store, poll_interval=settings.outbox_poll_interval)
    return Services(
        settings=settings,
        store=store,
        clock=clock,
        access=AccessService(store, clock),
        contacts=ContactService(store, clock, settings.default_phone_region, reactions),
        templates=TemplateService(store, clock),
        instances=instances,
        tasks=TaskService(store, clock, reactions=reactions),
        idempotency=IdempotencyService(store, clock),
        jobs=jobs,
        stats=StatsService(store),
        diagrams=DiagramService(store, instances),
        bulk=bulk,
        imports=ContactImport(
            store,
            clock,
            jobs,
            settings.default_phone_region,
            batch_size=settings.job_batch_size,
            inline_limit=settings.import_inline_limit,
            reactions=reactions,
        ),
        outbox=outbox,
        stream=EventStream(store, outbox, heartbeat_s=settings.stream_heartbeat_s),
        reactions=reactions,
        events=EventService(store, clock, reactions),
        subscriptions=SubscriptionService(store, clock, allow_private=settings.outbound_allow_private),
        users=UserService(store, clock, settings.public_url),
        sessions=SessionService(store, clock, timedelta(hours=settings.session_hours)),
        consent=ConsentService(store, clock, reactions),
        tenant_settings=TenantSettingsService(store),
        simulation=SimulationService(store, clock, reactions, settings.default_phone_region),
        migration=Migration(
            store, clock, instances, jobs, batch_size=settings.job_batch_size, inline_limit=settings.bulk_inline_limit
        ),
        inbound_sms=InboundSms(
            store,
            clock,
            reactions,
            auth_token=settings.sms_auth_token,
            public_url=settings.public_url,
            region=settings.default_phone_region,
        ),
    )


async def bootstrap(services: Services, *, load_example: bool) -> None:
    """First start on an empty store: the default tenant, its superadmin token and (for serve) the example."""
    done = await services.access.bootstrap(services.settings.data_dir, services.settings.admin_token)
    if done.generated_token:
        show_token(done.generated_token, done.token_file)
    if done.created_tenant and load_example:
        from .examples import reference_template

        await services.templates.create(SYSTEM, TemplateCreate.model_validate(reference_template()), replace=True)
        log.info("loaded the reference template county-outreach-v1")


def show_token(token: str, token_file: Path | None) -> None:
    """The generated token, set apart from the log lines around it: a panel at a terminal, else a block between
    blank lines (a log collector keeps it as lines of its own)."""
    kept = f"also kept in {token_file}" if token_file else "not kept anywhere else"
    title = f"created tenant {DEFAULT_TENANT!r} and a superadmin token"
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.panel import Panel
        from rich.text import Text

        body = Text(f"{token}\n\nShown once here; {kept}.")
        Console(file=sys.stderr).print(Panel(body, title=title, title_align="left", expand=False))
    else:
        print(f"\ncbworkflow: {title} (shown once; {kept}):\n\n    {token}\n", file=sys.stderr, flush=True)


def make_worker(services: Services, handlers: Handlers | None = None) -> Worker:
    """The worker on these services; it wakes when this process makes due work."""
    settings = services.settings
    worker = Worker(
        services.store,
        services.clock,
        handlers or DefaultHandlers(settings),
        automatic_actions=services.instances.automatic_actions,
        poll_interval=settings.worker_poll_interval,
        lease=timedelta(seconds=settings.worker_lease_s),
        concurrency=settings.worker_concurrency,
        jobs=lambda worker_id: job_runner(services, worker_id),
        reactions=services.reactions,
    )
    services.instances.notify = worker.wake
    services.jobs.notify = worker.wake
    deliveries = make_deliveries(services, worker.id)
    worker.companions.append(deliveries.run)
    services.subscriptions.notify = deliveries.sender.wake
    return worker


def make_deliveries(services: Services, worker_id: str) -> Deliveries:
    """The webhook fan-out and sender of a worker, from the settings."""
    settings = services.settings
    sender = Sender(
        services.store,
        services.clock,
        worker_id=worker_id,
        allow_private=settings.outbound_allow_private,
        timeout_s=settings.webhook_timeout_s,
        lease=timedelta(seconds=settings.webhook_lease_s),
        concurrency=settings.webhook_concurrency,
        per_subscription=settings.webhook_subscription_concurrency,
        poll_interval=settings.worker_poll_interval,
    )
    return Deliveries(
        services.store, services.clock, services.outbox, sender, poll_interval=settings.worker_poll_interval
    )


def job_runner(services: Services, worker_id: str) -> JobRunner:
    """What runs jobs in a worker: each kind of job and the service whose batches do it."""
    kinds = {
        JobKind.BULK_ENROL: services.bulk.job_batch,
        JobKind.CONTACTS_IMPORT: services.imports.job_batch,
        JobKind.MIGRATE: services.migration.job_batch,
    }
    lease = timedelta(seconds=services.settings.job_lease_s)
    return JobRunner(services.store, services.clock, kinds, worker_id=worker_id, lease=lease)
