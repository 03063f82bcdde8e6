"""The FastAPI application: built by `create_app`, with the store and services made in its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import web
from ..clock import Clock
from ..runtime.worker import Handlers
from ..settings import Settings
from ..store.base import Store
from ..wiring import bootstrap, build_services, make_worker
from . import docs, errors, openapi
from .body_limit import BodyLimit
from .idempotency import Idempotency
from .metrics import Metrics, MetricsMiddleware
from .rate_limit import RateLimiter
from .request_log import RequestLog
from .routes import admin, consent, contacts, events, instances, jobs, stream, subscriptions, tasks, users, workflows

log = logging.getLogger("cbworkflow")


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
        await services.outbox.start()
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
            await services.outbox.stop()
            await services.store.close()

    app = FastAPI(
        title="cbworkflow",
        version="0.1.0",
        summary="Workflow engine for campaign outreach",
        lifespan=lifespan,
        docs_url=None,  # our own /docs: the default one loads Swagger UI from a CDN
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,  # every route's id from one table; a new route needs one
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit)
    app.state.metrics = metrics = Metrics(app.version)
    errors.install(app)
    docs.install(app)
    openapi.install(app)
    routers = (
        admin.router,
        admin.api,
        contacts.router,
        consent.router,
        workflows.router,
        instances.router,
        tasks.router,
        events.router,
        stream.router,
        jobs.router,
        subscriptions.router,
        users.router,
    )
    for router in routers:
        app.include_router(router)
    web.install(app)
    api_routes = [route for router in routers for route in router.routes]  # to name answers made before routing
    # Each add_middleware wraps the ones before it: the last added is the outermost. From the outside in: metrics
    # (they see every answer, 413 and 429 too), the request id and access log (which also answers an exception
    # that escaped, so metrics see its status), the body limit, which buffers the body that idempotency hashes.
    app.add_middleware(Idempotency)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, import_limit=settings.import_max_bytes)
    app.add_middleware(RequestLog, fallback_routes=api_routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, fallback_routes=api_routes)
    return app
