"""GET /metrics: requests by route template and status, latency, store and unexpected errors, instances by status.

Real server processes (SQLite and PostgreSQL) where it matters; the in-process app (httpx.ASGITransport) only for
what a real server cannot be made to do on demand: a bug (an unexpected 500) and the cache's clock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from cbworkflow.api.app import create_app
from cbworkflow.api.metrics import INSTANCE_COUNT_TTL_S, UNMATCHED, Metrics
from cbworkflow.errors import StoreError
from cbworkflow.models.instances import InstanceStatus
from cbworkflow.settings import SettingsError, load_settings
from cbworkflow.store.base import SystemTx, Tx
from conftest import (
    ADMIN_TOKEN,
    REFERENCE_ID,
    PostgresDatabase,
    Server,
    free_port,
    reference_template,
    start_server,
    stop_server,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
METRICS_TOKEN = "metrics-scrape-token-0123456789"


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: Samples, method: str, route: str, status: int) -> float:
    return value(samples, "cbw_http_requests_total", method=method, route=route, status=str(status))


def scrape(base_url: str, token: str | None = None) -> tuple[Samples, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text), answer.text


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server of its own: nothing has been scraped or counted on it yet."""
    database = PostgresDatabase() if request.param == "postgresql" else None
    url = database.url if database else None
    port = free_port()
    proc = start_server(tmp_path, port, tmp_path / "server.log", database_url=url)
    try:
        yield Server(f"http://127.0.0.1:{port}", tmp_path, ADMIN_TOKEN, url)
    finally:
        stop_server(proc)
        if database:
            database.drop()


# ---------------------------------------------------------------------------------------------------- requests
def test_requests_are_counted_by_route_template_and_status(fresh_server: Server) -> None:
    base = fresh_server.base_url
    with fresh_server.client(ADMIN_TOKEN) as client:
        contact = client.post("/api/contacts", json={"name": "Ada Lovelace", "phone": "(555) 201-3344"})
        assert contact.status_code == 201
        contact_id = contact.json()["id"]
        assert client.get(f"/api/contacts/{contact_id}").status_code == 200
        assert client.get("/api/contacts/unknownid12345").status_code == 404
        assert client.post("/api/contacts", json={"nam": "typo"}).status_code == 422
        assert client.get("/no/such/route/secretsegment999").status_code == 404
        assert client.get("/api/contacts/search", params={"q": "Lovelace"}).status_code == 200
        big = client.post("/api/contacts", content=b"{" + b" " * 2_000_000 + b"}")
        assert big.status_code == 413
        replayed = [
            client.post("/api/contacts", json={"name": "Once"}, headers={"Idempotency-Key": "metrics-key-1"})
            for _ in range(2)
        ]
        assert [r.status_code for r in replayed] == [201, 201]
        assert replayed[1].headers["idempotent-replayed"] == "true"
        assert client.request("BREW", "/api/contacts").status_code == 405
    with httpx.Client(base_url=base) as anonymous:
        assert anonymous.get("/api/contacts").status_code == 401

    samples, text = scrape(base)
    item = "/api/contacts/{contact_id}"
    assert requests_of(samples, "POST", "/api/contacts", 201) == 3  # one made, one idempotent, its replay
    assert requests_of(samples, "GET", item, 200) == 1
    assert requests_of(samples, "GET", item, 404) == 1
    assert requests_of(samples, "POST", "/api/contacts", 422) == 1
    assert requests_of(samples, "POST", "/api/contacts", 413) == 1  # answered before routing, named all the same
    assert requests_of(samples, "GET", "/api/contacts/search", 200) == 1
    assert requests_of(samples, "GET", UNMATCHED, 404) == 1
    assert requests_of(samples, "GET", "/api/contacts", 401) == 1
    assert requests_of(samples, "OTHER", "/api/contacts", 405) == 1  # unusual methods do not make new series
    assert requests_of(samples, "GET", "/healthz", 200) >= 1  # the start-up probe

    duration = "cbw_http_request_duration_seconds"
    labels = {"method": "GET", "route": item}
    assert value(samples, f"{duration}_count", **labels) == 2
    assert value(samples, f"{duration}_sum", **labels) > 0
    assert value(samples, f"{duration}_bucket", le="+Inf", **labels) == 2
    assert value(samples, f"{duration}_bucket", le="10.0", **labels) <= 2
    assert value(samples, f"{duration}_bucket", le="0.005", **labels) <= value(
        samples, f"{duration}_bucket", le="10.0", **labels
    )

    # No id, path segment or query term reaches the exposition: labels are templates.
    for raw in (contact_id, "unknownid12345", "secretsegment999", "Lovelace", "metrics-key-1", "BREW"):
        assert raw not in text
    routes = {dict(labels)["route"] for (name, labels) in samples if name == "cbw_http_requests_total"}
    assert all(route == UNMATCHED or route.startswith("/") for route in routes)
    assert value(samples, "cbw_store_errors_total") == 0
    assert value(samples, "cbw_unhandled_errors_total") == 0
    assert value(samples, "cbw_build_info", version="0.1.0") == 1

    # The scrape itself is counted, by the next scrape.
    again, _ = scrape(base)
    assert requests_of(again, "GET", "/metrics", 200) == 1


def test_instances_by_status_cover_every_status_and_every_tenant(fresh_server: Server) -> None:
    with fresh_server.client(ADMIN_TOKEN) as root:
        tenant = root.post("/api/tenants", json={"name": "Second county"})
        assert tenant.status_code == 201
        clients = [root, fresh_server.client(tenant.json()["admin_token"])]
        try:
            statuses = []
            for client in clients:
                if client.get(f"/api/workflows/{REFERENCE_ID}").status_code == 404:
                    assert client.post("/api/workflows", json=reference_template()).status_code == 201
                for start in (True, False, True):
                    contact = client.post("/api/contacts", json={"name": "Voter"}).json()
                    made = client.post(
                        "/api/instances",
                        json={"contact_id": contact["id"], "template_id": REFERENCE_ID, "start": start},
                    )
                    assert made.status_code == 201, made.text
                    statuses.append(made.json()["status"])
                cancelled = client.post(f"/api/instances/{made.json()['id']}/cancel", json={})
                assert cancelled.status_code == 200, cancelled.text
        finally:
            clients[1].close()

    samples, _ = scrape(fresh_server.base_url)  # the first count of this server: nothing cached
    counts = {status.value: value(samples, "cbw_instances", status=status.value) for status in InstanceStatus}
    assert counts == {
        "pending": 2,
        "active": 2,
        "paused": 0,
        "waiting": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 2,
    }
    # Every status is a series, zeros included, so a dashboard never sees one appear from nothing.
    assert {dict(labels)["status"] for (name, labels) in samples if name == "cbw_instances"} == set(counts)


# ---------------------------------------------------------------------------------------------------- the token
@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("metrics-token")
    (data_dir / ".env").write_text(f"CBW_METRICS_TOKEN={METRICS_TOKEN}\n")  # start_server passes no other CBW_
    port = free_port()
    proc = start_server(data_dir, port, data_dir / "server.log", workdir=data_dir)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def test_metrics_token_is_required_when_set(guarded_server: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},  # an API token, even a superadmin's, is not the metrics token
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    ):
        refused = httpx.get(f"{guarded_server}/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "metrics token" in refused.json()["detail"]
        assert METRICS_TOKEN not in refused.text
    samples, _ = scrape(guarded_server, METRICS_TOKEN)
    assert requests_of(samples, "GET", "/metrics", 401) == 5
    assert httpx.get(f"{guarded_server}/healthz").status_code == 200  # health stays open


def test_open_by_default(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/metrics").status_code == 200


def test_metrics_token_setting_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CBW_METRICS_TOKEN", "short-secret")
    with pytest.raises(SettingsError) as bad:
        load_settings()
    assert "CBW_METRICS_TOKEN" in str(bad.value)
    assert "short-secret" not in str(bad.value)  # a secret is never echoed, not even a bad one
    monkeypatch.setenv("CBW_METRICS_TOKEN", "")
    assert load_settings().metrics_token is None  # empty means unset (compose files write VAR= for "none")


# ---------------------------------------------------------------------------------------------------- store errors
def test_store_errors_are_counted_when_postgresql_goes_away(tmp_path: Path) -> None:
    """A real outage: the server's database is renamed under it, then given back."""
    database = PostgresDatabase()
    port = free_port()
    proc = start_server(tmp_path, port, tmp_path / "server.log", database_url=database.url)
    base = f"http://127.0.0.1:{port}"
    away = f"{database.name}_away"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as client:
            assert client.post("/api/contacts", json={"name": "Before"}).status_code == 201
            _rename(database, database.name, away)
            try:
                failed = client.post("/api/contacts", json={"name": "During"})
                assert failed.status_code == 503
                assert failed.json() == {"detail": "the database is busy or unavailable; try again"}
                assert failed.headers["x-request-id"]
                assert failed.headers["retry-after"] == "5"  # as the OpenAPI document says of every 503
                # Raised in the idempotency middleware, outside the routes' error handlers: the same answer.
                keyed = client.post("/api/contacts", json={"name": "During"}, headers={"Idempotency-Key": "k-1"})
                assert keyed.status_code == 503
                assert keyed.json()["detail"] == failed.json()["detail"]
                assert keyed.headers["x-request-id"]
                assert keyed.headers["retry-after"] == "5"
                during, _ = scrape(base)
            finally:
                _rename(database, away, database.name)
            assert client.post("/api/contacts", json={"name": "After"}).status_code == 201
        after, _ = scrape(base)
    finally:
        stop_server(proc)
        database.drop()
    assert value(during, "cbw_store_errors_total") >= 2
    assert requests_of(during, "POST", "/api/contacts", 503) == 2
    assert value(during, "cbw_unhandled_errors_total") == 0
    assert value(after, "cbw_store_errors_total") == value(during, "cbw_store_errors_total")
    assert requests_of(after, "POST", "/api/contacts", 201) == 2


def _rename(database: PostgresDatabase, old: str, new: str) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for _ in range(100):  # pg_terminate_backend only asks: the backends leave a moment later
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (old,))
            try:
                conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.05)
    raise AssertionError(f"could not rename the database {old}")


# ---------------------------------------------------------------------------------------------------- in process
@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.chdir(tmp_path)  # no stray .env
    settings = load_settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, rate_limit=0, database_url=None)
    return create_app(settings, load_example=False)


def test_an_unexpected_error_is_a_counted_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path, monkeypatch)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom/{thing}", boom, include_in_schema=False)  # a test route: no operation id needed

    async def run() -> tuple[httpx.Response, Samples]:
        async with running(app) as client:
            answer = await client.get("/boom/abc123")
            return answer, parse((await client.get("/metrics")).text)

    answer, samples = asyncio.run(run())
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; it has been logged"}
    assert "a bug" not in answer.text
    assert answer.headers["x-request-id"]
    assert value(samples, "cbw_unhandled_errors_total") == 1
    assert requests_of(samples, "GET", "/boom/{thing}", 500) == 1


def test_a_store_failure_is_counted_and_the_gauge_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path, monkeypatch)

    async def failing_read(_tenant: str, _fn: Callable[[Tx], Any]) -> Any:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError as exc:
            raise StoreError("the database is busy or unavailable; try again") from exc

    async def failing_system_read(_fn: Callable[[SystemTx], Any]) -> Any:
        return await failing_read("", lambda _tx: None)

    async def run() -> tuple[httpx.Response, Samples]:
        async with running(app) as client:
            monkeypatch.setattr(app.state.services.store, "read", failing_read)
            monkeypatch.setattr(app.state.services.store, "system_read", failing_system_read)
            answer = await client.get("/api/contacts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            return answer, parse((await client.get("/metrics")).text)

    answer, samples = asyncio.run(run())
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert value(samples, "cbw_store_errors_total") == 2  # the request's, and the scrape's count of instances
    assert not [name for (name, _) in samples if name == "cbw_instances"]  # no stale or made-up numbers
    assert requests_of(samples, "GET", "/api/contacts", 503) == 1


class CountingStore:
    def __init__(self) -> None:
        self.calls = 0

    async def system_read(self, _fn: Callable[[SystemTx], Any]) -> dict[str, int]:
        self.calls += 1
        return {"active": self.calls}


def test_instance_counts_are_cached_for_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("cbworkflow.api.metrics.time.monotonic", lambda: clock[0])
    metrics = Metrics("test")
    store: Any = CountingStore()

    async def scrape_twice() -> None:
        await metrics.refresh_instance_counts(store)
        await metrics.refresh_instance_counts(store)

    asyncio.run(scrape_twice())
    assert store.calls == 1
    clock[0] += INSTANCE_COUNT_TTL_S - 1
    asyncio.run(metrics.refresh_instance_counts(store))
    assert store.calls == 1
    assert value(parse(metrics.render().decode()), "cbw_instances", status="active") == 1
    clock[0] += 2
    asyncio.run(metrics.refresh_instance_counts(store))
    assert store.calls == 2
    assert value(parse(metrics.render().decode()), "cbw_instances", status="active") == 2

    metrics.instances_ttl_s = 0  # counts on every scrape
    asyncio.run(scrape_twice())
    assert store.calls == 4


def test_concurrent_scrapes_count_once(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics("test")
    store: Any = CountingStore()

    async def many() -> None:
        await asyncio.gather(*(metrics.refresh_instance_counts(store) for _ in range(10)))

    asyncio.run(many())
    assert store.calls == 1


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics("a"), Metrics("b")
    first.observe("GET", "/x", 200, 0.01)
    assert requests_of(parse(second.render().decode()), "GET", "/x", 200) == 0
    assert requests_of(parse(first.render().decode()), "GET", "/x", 200) == 1
