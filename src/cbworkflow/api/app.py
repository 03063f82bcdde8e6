"""The FastAPI application: built by `create_app`, with the store and services made in its lifespan."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from ..clock import Clock
from ..engine.handlers import DefaultHandlers, automatic_actions
from ..engine.worker import Handlers, Worker
from ..models.access import Principal, Role
from ..models.templates import TemplateCreate
from ..services.access import DEFAULT_TENANT, AccessService
from ..services.contacts import ContactService
from ..services.instances import InstanceService
from ..services.tasks import TaskService
from ..services.templates import TemplateService
from ..settings import Settings
from ..store import open_store
from ..store.base import Store
from . import docs, errors
from .body_limit import BodyLimit
from .deps import Services
from .idempotency import Idempotency
from .metrics import Metrics, MetricsMiddleware
from .rate_limit import RateLimiter
from .request_log import RequestLog
from .routes import admin, contacts, events, instances, tasks, workflows

log = logging.getLogger("cbworkflow")

SYSTEM = Principal(token_id="system", tenant=DEFAULT_TENANT, role=Role.SUPERADMIN, name="system")


async def build_services(settings: Settings, store: Store | None = None, clock: Clock | None = None) -> Services:
    """Open and migrate the store, then make the services. Used by the app, the CLI and tests."""
    store = store or open_store(settings)
    clock = clock or Clock()
    await store.migrate()
    automatic = automatic_actions(settings)
    return Services(
        settings=settings,
        store=store,
        clock=clock,
        access=AccessService(store, clock),
        contacts=ContactService(store, clock, settings.default_phone_region),
        templates=TemplateService(store, clock),
        instances=InstanceService(store, clock, automatic),
        tasks=TaskService(store, clock),
    )


async def bootstrap(services: Services, *, load_example: bool) -> None:
    """First start on an empty store: the default tenant, its superadmin token and (for serve) the example."""
    done = await services.access.bootstrap(services.settings.data_dir, services.settings.admin_token)
    if done.generated_token:
        print(
            f"cbworkflow: created tenant 'default' and a superadmin token (shown once, also in {done.token_file}):\n"
            f"  {done.generated_token}",
            file=sys.stderr,
            flush=True,
        )
    if done.created_tenant and load_example:
        from ..examples import reference_template

        await services.templates.create(SYSTEM, TemplateCreate.model_validate(reference_template()), replace=True)
        log.info("loaded the reference template county-outreach-v1")


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
    )
    services.instances.notify = worker.wake
    return worker


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    load_example: bool = True,
    run_worker: bool = False,
    handlers: Handlers | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, store, clock)
        await bootstrap(services, load_example=load_example)
        if not settings.anthropic_api_key:
            log.warning(
                "no ANTHROPIC_API_KEY: AI decisions will not ask a model; each takes its fallback or waits for a person"
            )
        app.state.services = services
        stop = asyncio.Event()
        running = None
        if run_worker:
            worker = make_worker(services, handlers)
            running = asyncio.create_task(worker.run(stop))
        try:
            yield
        finally:
            stop.set()
            if running is not None:
                await running
            await services.store.close()

    app = FastAPI(
        title="cbworkflow",
        version="0.1.0",
        summary="Workflow engine for campaign outreach",
        lifespan=lifespan,
        docs_url=None,  # our own /docs: the default one loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit)
    app.state.metrics = metrics = Metrics(app.version)
    errors.install(app)
    docs.install(app)
    routers = (
        admin.router,
        admin.api,
        contacts.router,
        workflows.router,
        instances.router,
        tasks.router,
        events.router,
    )
    for router in routers:
        app.include_router(router)
    api_routes = [route for router in routers for route in router.routes]  # to name answers made before routing
    # Each add_middleware wraps the ones before it: the last added is the outermost. From the outside in: metrics
    # (they see every answer, 413 and 429 too), the request id and access log (which also answers an exception
    # that escaped, so metrics see its status), the body limit, which buffers the body that idempotency hashes.
    app.add_middleware(Idempotency)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestLog, fallback_routes=api_routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, fallback_routes=api_routes)
    return app
