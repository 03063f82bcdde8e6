"""Contacts import and export at campaign scale (issue 10: a voter file of 100,000 rows, 1% bad).

    .venv/bin/python bench/bench_import.py [--rows 100000] [--runs 3] [--stores sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

For each store, on a fresh store, in-process through the services, as `cbworkflow contacts import` runs it:
- writes a CSV of `--rows` voters (1% bad: bad emails, empty names, unparseable phones, duplicate external ids,
  rows with too many fields) and imports it, a batch of 500 per transaction: rows a second;
- imports the same file again (every row `unchanged`): rows a second;
- exports every contact as CSV, streamed: rows a second;
- the peak resident memory of the process (ru_maxrss) after all of it.
Baseline in the same run: the same contact rows written with one `executemany` per 500 (SQLite) or `COPY`
(PostgreSQL), through the same SQLAlchemy connection, without any checks. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cbworkflow.models.imports import FileFormat
from cbworkflow.services.contact_files import csv_header, csv_row
from cbworkflow.services.contact_import import Report
from cbworkflow.settings import Settings
from cbworkflow.store.base import ContactFilter
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

POSTGRES = os.environ.get("CBW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_url() -> str:
    return os.environ.get("CBW_BENCH_POSTGRES", POSTGRES)


def voter_file(path: Path, rows: int) -> int:
    """The CSV; returns how many of its rows are bad."""
    bad = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("name,email,phone,county,external_id,tags,precinct\n")
        for i in range(rows):
            name, email, phone, external = f"Voter {i}", f"voter{i}@example.org", f"+1555{i:07d}", f"vf-{i}"
            kind = i % 500
            if kind == 1:
                email = "not-an-email"
            elif kind == 2:
                name = ""
            elif kind == 3:
                phone = "call me"
            elif kind == 4:
                external = f"vf-{i - 4}"
            if kind in (1, 2, 3, 4, 5):
                bad += 1
            extra = ",x,y,z" if kind == 5 else ""
            out.write(f"{name},{email},{phone},County {i % 30},{external},voter;wave-{i % 7},{i % 90}{extra}\n")
    return bad


async def run_store(kind: str, rows: int, folder: Path) -> dict[str, Any]:
    database_url = None
    database = None
    if kind == "postgresql":
        database = f"cbw_bench_import_{os.getpid()}"
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
            conn.execute(f'CREATE DATABASE "{database}"')
        database_url = postgres_url().rsplit("/", 1)[0] + f"/{database}"
    settings = Settings(data_dir=folder / kind, database_url=database_url, admin_token="bench-token-0123456789")
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=False)
        source = folder / "voters.csv"
        bad = voter_file(source, rows)
        figures: dict[str, Any] = {"store": kind, "rows": rows, "bad": bad}
        for label in ("import", "again"):
            started = time.perf_counter()
            prepared = await services.imports.prepare(source, FileFormat.CSV)
            report = Report()
            try:
                async for _ in services.imports.batches(SYSTEM.tenant, "bench", prepared, report):
                    pass
            finally:
                prepared.discard()
            figures[label] = rows / (time.perf_counter() - started)
            figures[f"{label}_counts"] = (report.created, report.updated, report.unchanged, report.rejected)
        started = time.perf_counter()
        exported = 0
        with (folder / "export.csv").open("w", encoding="utf-8") as out:
            out.write(csv_header())
            async for page in services.imports.export(SYSTEM.tenant, ContactFilter()):
                out.write("".join(csv_row(contact) for contact in page))
                exported += len(page)
        figures["export"] = exported / (time.perf_counter() - started)
        figures["baseline"] = rows / await baseline(services, rows)
        figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return figures
    finally:
        await services.store.close()
        if database is not None:
            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def baseline(services: Any, rows: int) -> float:
    """Seconds to write the same rows into the contacts table with no checks: executemany (SQLite), COPY (PG)."""
    from sqlalchemy import insert

    from cbworkflow.store import schema

    now = datetime.now(UTC)

    def values(i: int) -> dict[str, Any]:
        return {
            "tenant": "baseline",
            "id": f"b{i}",
            "name": f"Voter {i}",
            "email": f"voter{i}@example.org",
            "phone": f"+1555{i:07d}",
            "phone_e164": f"+1555{i:07d}",
            "county": f"County {i % 30}",
            "external_id": f"vf-{i}",
            "tags": ["voter"],
            "metadata": {"precinct": str(i % 90)},
            "created_at": now,
            "updated_at": now,
        }

    engine = services.store._engine  # the baseline writes past the store, on its own engine
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            columns = "tenant, id, name, email, phone, phone_e164, county, external_id, tags, metadata, created_at, "
            columns += "updated_at"
            with cursor.copy(f"COPY contacts ({columns}) FROM STDIN") as copy:
                for i in range(rows):
                    v = values(i)
                    copy.write_row(
                        [
                            v["tenant"],
                            v["id"],
                            v["name"],
                            v["email"],
                            v["phone"],
                            v["phone_e164"],
                            v["county"],
                            v["external_id"],
                            '["voter"]',
                            '{"precinct": "1"}',
                            now,
                            now,
                        ]
                    )
            raw.commit()
        finally:
            raw.close()
    else:
        with engine.begin() as conn:
            for start in range(0, rows, 500):
                conn.execute(insert(schema.contacts), [values(i) for i in range(start, min(rows, start + 500))])
    return time.perf_counter() - started


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh stores per store kind; medians are reported")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=POSTGRES)
    args = parser.parse_args()
    os.environ["CBW_BENCH_POSTGRES"] = args.postgres
    results: dict[str, list[dict[str, Any]]] = {}
    for kind in args.stores.split(","):
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                results.setdefault(kind, []).append(asyncio.run(run_store(kind, args.rows, Path(folder))))
    print(f"rows/s, median of {args.runs} runs (min-max); x = baseline / first import, median of the runs' ratios")
    for kind, runs in results.items():
        ratio = statistics.median(r["baseline"] / r["import"] for r in runs)
        print(f"{kind} ({args.rows:,} rows):")
        for label in ("import", "again", "export", "baseline"):
            print(f"  {label:<9}{_spread([r[label] for r in runs]):>34}")
        print(f"  x{ratio:>8.1f}   peak MB {max(r['peak_mb'] for r in runs):.0f}")
        print(f"  first import (created, updated, unchanged, rejected): {runs[0]['import_counts']}")
        print(f"  again: {runs[0]['again_counts']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
