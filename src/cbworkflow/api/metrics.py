"""What `GET /metrics` (routes/admin.py) exposes in the Prometheus text format: requests, latency, errors, instances.

Each app has its own `CollectorRegistry` (never prometheus_client's global one), so every counter is per server
process: with several `serve` processes, Prometheus scrapes each process's own address, not the load balancer.

- `cbw_http_requests_total{method,route,status}` and `cbw_http_request_duration_seconds{method,route}`: `route`
  is the route's template (`/api/contacts/{contact_id}`), never the path, so no id reaches a label and the number
  of series stays bounded; a request no route matches is `<unmatched>`, an unusual method `OTHER`.
- `cbw_store_errors_total`: store failures (`StoreError`, answered 503); `cbw_unhandled_errors_total`: 500s.
- `cbw_instances{status}`: instances in each status over every tenant (every status, zeros included), counted at
  most once every `INSTANCE_COUNT_TTL_S` seconds per process, so a scrape every few seconds does not walk the
  instances table each time. Every process reports the same numbers: aggregate them with max, not sum.
- `cbw_build_info{version}`, and the `process_*` / `python_info` series of prometheus_client.

The figures are aggregate counts, with no tenant, id or personal data: the route is open like `/healthz`, unless
`CBW_METRICS_TOKEN` is set, and then it asks for `Authorization: Bearer <that token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import StoreError
from ..models.instances import InstanceStatus
from ..store.base import Store

log = logging.getLogger("cbworkflow.metrics")

# How long (seconds) one count of instances by status is reused by later scrapes of the same process. Counting
# groups the whole instances table; Prometheus scrapes every 5 to 60 s, and these numbers move slowly.
INSTANCE_COUNT_TTL_S = 15.0
# Request latency buckets, from 5 ms to 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# No `*_created` series beside every counter and histogram: they double the series and nothing here uses them.
# (A process-wide switch of prometheus_client, read when a series is collected.)
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The metrics of one app: its registry, the request metrics, the error counters and the instance counts."""

    def __init__(self, version: str, *, instances_ttl_s: float = INSTANCE_COUNT_TTL_S) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cbw_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "cbw_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ("method", "route"),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "cbw_store_errors", "Store failures (the database busy or unreachable).", registry=self.registry
        )
        self.unhandled_errors = Counter(
            "cbw_unhandled_errors", "Unexpected errors (answered 500; each is logged).", registry=self.registry
        )
        Info("cbw_build", "The running version of cbworkflow.", registry=self.registry).info({"version": version})
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_InstancesCollector(self))

        self.instances_ttl_s = instances_ttl_s  # a test may set 0 to count on every scrape
        self.instance_counts: dict[str, int] | None = None
        self._counted_at = 0.0
        self._counting = asyncio.Lock()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def _fresh(self) -> bool:
        return self.instance_counts is not None and time.monotonic() - self._counted_at < self.instances_ttl_s

    async def refresh_instance_counts(self, store: Store) -> None:
        """Count instances by status unless the last count is younger than the TTL (one count at a time).

        On failure the gauge is left out of the next exposition rather than showing stale numbers."""
        if self._fresh():
            return
        async with self._counting:
            if self._fresh():  # another scrape counted while this one waited
                return
            try:
                counts = await store.system_read(lambda stx: stx.count_instances_by_status())
            except StoreError as exc:
                self.store_errors.inc()
                self.instance_counts = None
                log.warning("could not count instances for /metrics: %s", exc.detail)
                return
            except Exception:
                self.unhandled_errors.inc()
                self.instance_counts = None
                log.exception("could not count instances for /metrics")
                return
            self.instance_counts = counts
            self._counted_at = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _InstancesCollector(Collector):
    """`cbw_instances{status}` from the last count (prometheus collectors are synchronous; the store is not)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cbw_instances",
            f"Workflow instances in each status, over every tenant (recounted at most every "
            f"{INSTANCE_COUNT_TTL_S:g} s).",
            labels=["status"],
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        counts = self.metrics.instance_counts
        if counts is None:
            return []
        family = self._family()
        statuses = [status.value for status in InstanceStatus]
        for status in statuses + sorted(set(counts) - set(statuses)):
            family.add_metric([status], counts.get(status, 0))
        return [family]


# ---------------------------------------------------------------------------------------------------- middleware
def _find_route(scope: Scope, routes: Sequence[BaseRoute]) -> BaseRoute | None:
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def route_template(scope: Scope, fallback: Sequence[BaseRoute] = ()) -> str:
    """The path template of the route that answered (`/api/contacts/{contact_id}`), or `<unmatched>`.

    An answer made before the router ran (a 413 of the body limit, an idempotent replay) has no route in the
    scope: `fallback`, the app's API routes, are matched against the request to name it all the same."""
    route = scope.get("route") or _find_route(scope, fallback)
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) and template else UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: the answer streams through untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, fallback_routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.fallback_routes = fallback_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            self.metrics.observe(
                scope["method"],
                route_template(scope, self.fallback_routes),
                status or 500,
                time.perf_counter() - started,
            )
            raise
        self.metrics.observe(
            scope["method"], route_template(scope, self.fallback_routes), status or 500, time.perf_counter() - started
        )


def count_store_error(app: Any) -> None:
    metrics: Metrics | None = getattr(app.state, "metrics", None)
    if metrics is not None:
        metrics.store_errors.inc()


def count_unhandled_error(app: Any) -> None:
    metrics: Metrics | None = getattr(app.state, "metrics", None)
    if metrics is not None:
        metrics.unhandled_errors.inc()


def authorized(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries the metrics token (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
