"""What the hot-path benchmarks share: where a store lives (and its cached copy), percentiles, memory, the machine.

Kept apart so bench_http.py, bench_inprocess.py, bench_lists.py and run_all.py measure and describe things the
same way; each script still runs alone.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from cbworkflow.settings import Settings

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).parent / "results"
# The store's own pragmas (store/sqlite.py), so a raw-driver baseline runs under the same durability.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA synchronous={Settings.model_fields['sqlite_synchronous'].default}",
    "PRAGMA busy_timeout=30000",
    "PRAGMA cache_size=-65536",
    "PRAGMA temp_store=MEMORY",
)


class Place:
    """A store of its own: a SQLite file in `folder`, or a PostgreSQL database made now (a copy of `like`'s, or of
    the database named `template`, when given) and dropped by `drop`."""

    def __init__(self, kind: str, work: Path, like: Place | None = None, template: str | None = None) -> None:
        self.kind = kind
        self.folder = work / f"{kind}-{secrets.token_hex(3)}"
        self.folder.mkdir(parents=True)
        self.database = f"cbw_hot_{secrets.token_hex(4)}" if kind == "postgresql" else None
        source = like.database if like else template
        if self.database:
            copy = f' TEMPLATE "{source}"' if source else ""
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"{copy}')
        elif like:
            shutil.copyfile(like.db, self.db)

    @classmethod
    def existing(cls, folder: Path) -> Place:
        """The SQLite store kept in `folder` (which may not hold it yet), to copy from; never dropped."""
        place = cls.__new__(cls)
        place.kind, place.folder, place.database = "sqlite", folder, None
        return place

    @property
    def pg(self) -> bool:
        return self.database is not None

    @property
    def db(self) -> Path:
        return self.folder / "cbworkflow.db"

    @property
    def url(self) -> str:
        if self.database:
            return database_url(self.database)
        return f"sqlite:///{self.db}"

    def connect(self) -> Any:
        """A raw connection in autocommit mode (SQLite with the store's pragmas)."""
        if self.database:
            return psycopg.connect(self.url, autocommit=True)
        conn = sqlite3.connect(self.db, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        return conn

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    def settle(self, *, vacuum: bool = False) -> None:
        """After a bulk load: fresh statistics on PostgreSQL (autovacuum is off on some machines), the write-ahead
        log folded into the file on SQLite (so the file is the whole store, and reads start from a quiet store).
        `vacuum`: PostgreSQL also vacuums, as autovacuum does on its own after a bulk load (PostgreSQL 13 and
        later), so index-only scans need not visit the table: the state a server with default settings reaches."""
        conn = self.connect()
        try:
            conn.execute(("VACUUM ANALYZE" if vacuum else "ANALYZE") if self.pg else "PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def drop(self) -> None:
        if self.database:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


def database_url(name: str) -> str:
    return re.sub(r"/[^/]*$", f"/{name}", POSTGRES)


def pg_database_exists(name: str) -> bool:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * share + 0.5) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def status_mb(pid: int | str, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    try:
        with psycopg.connect(POSTGRES) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        pg_version, autovacuum = f"unreachable ({type(exc).__name__})", "?"
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version,
        "postgresql_autovacuum": autovacuum,
        "commit": _commit(),
    }


def _commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return found.stdout.strip() or "?"
    except OSError:
        return "?"
