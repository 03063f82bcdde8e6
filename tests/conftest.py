"""Shared fixtures: a real server over TCP, a fresh tenant per test, tokens of every role.

Every API test talks HTTP to `cbworkflow serve`, started once per session as a process on a free loopback
port, on its own SQLite file. Tests isolate themselves by tenant (each gets a new one), which also exercises
tenancy for free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

ADMIN_TOKEN = "test-superadmin-token-0123456789"
# Contact hours open all day, for tests that are not about them: texts and calls are otherwise held back outside
# 09:00-20:00 New York time, and a test's outcome would depend on the hour it runs at (tests/api/test_hours_api.py
# and tests/store/test_hours_run.py are about them, on clocks of their own).
ALL_DAY = {"contact_hours": {"start": "00:00", "end": "24:00"}}
ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "src" / "cbworkflow" / "examples" / "county-outreach-v1.json"
CBWORKFLOW = Path(sys.executable).parent / "cbworkflow"


def _cache_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set, every Python process the suite starts (the xdist workers, the many
    `cbworkflow serve` and `worker` processes, the CLI) would compile the ~450 modules it imports from source again:
    about 2.5 s of a core for each server started. Their bytecode goes to a cache in the temporary folder instead
    (never beside the sources, which the variable keeps clean); the code that runs is the same. This runs in the
    controller before xdist starts its workers, so they and every process they start inherit it."""
    if not os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        return
    prefix = os.environ.setdefault(
        "PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / f"cbworkflow-test-pycache-{os.getuid()}")
    )
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_cache_bytecode()


# httpx makes an SSL context for every client (reading certifi's bundle: ~40 ms of a core), though the tests' clients
# speak plain HTTP to 127.0.0.1; the suite makes thousands of them (a tenant, a role, a page's browser). They share
# one, made as httpx makes its default.
TLS = httpx.create_ssl_context()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    data_dir: Path
    admin_token: str
    database_url: str | None = None  # None: the SQLite file in data_dir

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **({"verify": TLS} | kwargs))


def start_server(
    data_dir: Path,
    port: int,
    log: Path,
    *,
    workdir: Path | None = None,
    admin_token: str = ADMIN_TOKEN,
    rate_limit: float = 0,
    database_url: str | None = None,
    worker: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`cbworkflow serve` in its own process, as users run it; returns once /healthz answers.

    Only the test's own CBW_ settings reach it, and it runs in `workdir` (default: the data dir), so no stray `.env`
    or setting of the machine changes what is tested. Rate limiting is off unless asked for: tests send bursts.
    The worker runs inside the server only when asked for (`worker=True`); `env` adds settings.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    environment |= {"CBW_DATA_DIR": str(data_dir), "CBW_ADMIN_TOKEN": admin_token, "CBW_RATE_LIMIT": str(rate_limit)}
    if database_url:
        environment["CBW_DATABASE_URL"] = database_url
    environment |= env or {}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(CBWORKFLOW), "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ([] if worker else ["--no-worker"]),
            env=environment,
            cwd=workdir or data_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1, verify=TLS) as probe:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if probe.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    if not rate_limit:  # a limited server's bucket is its test's own: no request of ours from it
                        all_day(f"http://127.0.0.1:{port}", "default", admin_token)
                    return proc
            except httpx.HTTPError:
                time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the server did not answer /healthz in 60 s:\n{log.read_text()[-3000:]}")


def all_day(base_url: str, tenant: str, token: str) -> None:
    """Open the tenant's contact hours all day (see ALL_DAY)."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/api/tenants/{tenant}/settings"
    answer = httpx.patch(url, json=ALL_DAY, headers=headers, timeout=30, verify=TLS)
    assert answer.status_code == 200, answer.text


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def store_url(kind: str, data_dir: Path, database: PostgresDatabase | None) -> str | None:
    """The CBW_DATABASE_URL of a server on store `kind` (None: the default SQLite file in its data dir)."""
    if kind == "postgresql":
        assert database is not None
        return database.url
    if kind == "json":
        return f"json:///{data_dir / 'json-store'}"
    return None


@pytest.fixture(scope="session", params=["sqlite", "postgresql", "json"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server process per store for the session: every API test runs against SQLite, PostgreSQL and the
    JSON-file store.

    A process, not a thread: the server parses expressions with `ast`, and CPython 3.11 before 3.11.8 corrupts
    `ast` state when two threads use it at once."""
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    database = PostgresDatabase() if request.param == "postgresql" else None
    port = free_port()
    url = store_url(request.param, data_dir, database)
    proc = start_server(data_dir, port, data_dir / "server.log", database_url=url)
    try:
        yield Server(f"http://127.0.0.1:{port}", data_dir, ADMIN_TOKEN, url)
    finally:
        stop_server(proc)
        if database:
            database.drop()


ONE_STORE = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
"""For suites whose cases do not depend on storage (bad input, roles, the docs page): `pytestmark = ONE_STORE`
runs them against the SQLite server only; the store contract and the API suites still run on all three."""


@pytest.fixture(scope="session")
def root(server: Server) -> Iterator[httpx.Client]:
    """The bootstrap superadmin of tenant `default`."""
    with server.client(server.admin_token) as client:
        yield client


@dataclass
class Tenant:
    """A fresh tenant: `admin` is a client with its admin token; `as_role(role)` makes clients of other roles."""

    id: str
    server: Server
    admin_token: str
    admin: httpx.Client
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None) -> httpx.Client:
        made = self.server.client(token)
        self._clients.append(made)
        return made

    def token(self, role: str, name: str | None = None) -> dict[str, Any]:
        answer = self.admin.post("/api/tokens", json={"role": role, "name": name or f"{role} token"})
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def as_role(self, role: str) -> httpx.Client:
        return self.client(self.token(role)["token"])

    # ---- builders (return the JSON the API answered) ----
    def contact(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Test Person", **fields}
        answer = self.admin.post("/api/contacts", json=body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def template(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.admin.post("/api/workflows", json=body or reference_template())
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def instance(self, contact_id: str | None = None, template_id: str | None = None, **extra: Any) -> dict[str, Any]:
        if contact_id is None:
            contact_id = self.contact()["id"]
        if template_id is None:
            existing = self.admin.get(f"/api/workflows/{REFERENCE_ID}")
            template_id = REFERENCE_ID if existing.status_code == 200 else self.template()["id"]
        answer = self.admin.post("/api/instances", json={"contact_id": contact_id, "template_id": template_id, **extra})
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


REFERENCE_ID = "county-outreach-v1"


def reference_template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


_counter = iter(range(1_000_000))


@pytest.fixture
def make_tenant(server: Server, root: httpx.Client) -> Iterator[Callable[[], Tenant]]:
    made: list[Tenant] = []

    def make() -> Tenant:
        tenant_id = f"t{next(_counter)}-{int(time.time() * 1000) % 10**8}"
        answer = root.post("/api/tenants", json={"id": tenant_id, "name": f"Tenant {tenant_id}"})
        assert answer.status_code == 201, answer.text
        token = answer.json()["admin_token"]
        all_day(server.base_url, tenant_id, token)
        tenant = Tenant(tenant_id, server, token, server.client(token))
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        tenant.admin.close()
        for client in tenant._clients:
            client.close()


@pytest.fixture
def tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    return make_tenant()


# ---------------------------------------------------------------------------------------------------- PostgreSQL
POSTGRES_ADMIN_URL = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def unavailable(reason: str) -> NoReturn:
    """Something a test needs is missing: in CI (CI=true) that fails the run, so nothing is silently left
    untested; elsewhere (a laptop without it) the test is skipped with the reason."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


def require_postgres() -> str:
    """The admin URL of a reachable PostgreSQL. In CI (CI=true) a missing server fails the run; elsewhere the
    test is skipped with the reason."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__}: {exc})")
    return POSTGRES_ADMIN_URL


class PostgresDatabase:
    """A database of its own for one test (or module), dropped afterwards.

    `migrated=True`: a copy of a database this process migrated once (`CREATE DATABASE ... TEMPLATE`), for a test
    whose store is migrated before it starts anyway: the copy takes a fraction of the ~30 migration steps' time, and
    migrating it again finds nothing to do. Tests of migrations themselves take a new, empty database."""

    def __init__(self, *, migrated: bool = False) -> None:
        import uuid

        import psycopg

        self.admin_url = require_postgres()
        self.name = f"cbw_test_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{_migrated_template(self.admin_url)}"' if migrated else ""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"{template}')
        self.url = database_url(self.admin_url, self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextmanager
def migrated_postgres_store() -> Iterator[Any]:
    """A `PostgresStore` on a migrated database of its own (two connections), closed and dropped afterwards."""
    import asyncio

    from cbworkflow.store.postgres import PostgresStore

    database = PostgresDatabase(migrated=True)
    made = PostgresStore(database.url, pool_size=2)
    try:
        asyncio.run(made.migrate())
        yield made
    finally:
        asyncio.run(made.close())
        database.drop()


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


_templates: list[str] = []  # the migrated database of this process, once made (see PostgresDatabase)


def _migrated_template(admin_url: str) -> str:
    """The name of this process's migrated database, made on first use by the store's own `migrate()` on a new
    database (which must apply every step), and dropped at the end of the session. No connection to it stays open:
    PostgreSQL copies only a database nobody is connected to."""
    if _templates:
        return _templates[0]
    import asyncio
    import uuid

    import psycopg

    from cbworkflow.store.migrations import MIGRATIONS
    from cbworkflow.store.postgres import PostgresStore

    name = f"cbw_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _templates.append(name)
    store = PostgresStore(database_url(admin_url, name), pool_size=1)
    try:
        applied = asyncio.run(store.migrate())
    finally:
        asyncio.run(store.close())
    assert applied == [version for version, _, _ in MIGRATIONS], applied
    return name


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's migrated database (an xdist worker's, or a run without xdist)."""
    if not _templates:
        return
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_templates.pop()}" WITH (FORCE)')


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests (server processes, many rows) first, the order otherwise kept: under xdist they then run beside
    the many short ones, instead of being what is left at the end on one core while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
