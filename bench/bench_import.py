"""Contacts import and export at campaign scale (issue 10: a voter file of 100,000 rows, 1% bad).

    .venv/bin/python bench/bench_import.py [--rows 100000] [--runs 3] [--stores sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--profile]

For each store, on a fresh store, in-process through the services, as `cbworkflow contacts import` runs it:
- writes a CSV of `--rows` voters (1% bad: bad emails, empty names, unparseable phones, duplicate external ids,
  rows with too many fields) and imports it, a batch of 500 per transaction: rows a second;
- imports the same file again (every row `unchanged`): rows a second;
- exports every contact as CSV, streamed: rows a second;
- the peak resident memory of the process (ru_maxrss) after all of it.
Baseline in the same run: the same contact rows written with one `executemany` per 500 (SQLite) or `COPY`
(PostgreSQL), through the same SQLAlchemy connection, without any checks. Prints a table.
`--profile` instead imports the file once per store with cProfile on (the first pass, the reading of the items and
each batch's transaction, one after another in this thread), prints the seconds of each part and the top functions,
and writes the profile to bench/results/import-<store>-<time>.prof.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from cbworkflow.models.imports import FileFormat
from cbworkflow.services.contact_files import csv_header, csv_row, prepare
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


def new_database(kind: str) -> tuple[str | None, str | None]:
    """(its name, its URL) of a fresh PostgreSQL database for `kind` postgresql; (None, None) for SQLite."""
    if kind != "postgresql":
        return None, None
    database = f"cbw_bench_import_{os.getpid()}"
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    return database, postgres_url().rsplit("/", 1)[0] + f"/{database}"


def drop_database(database: str | None) -> None:
    if database is not None:
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def run_store(kind: str, rows: int, folder: Path) -> dict[str, Any]:
    database, database_url = new_database(kind)
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
        drop_database(database)


T = TypeVar("T")


async def profile_store(kind: str, rows: int, folder: Path, out: Path) -> str:
    """One first import under cProfile, in this thread: the first pass, then each chunk read and its batch."""
    database, database_url = new_database(kind)
    settings = Settings(data_dir=folder / kind, database_url=database_url, admin_token="bench-token-0123456789")
    services = await build_services(settings)
    profiler = cProfile.Profile()
    parts = {"first pass": 0.0, "reading items": 0.0, "batches": 0.0}

    def timed(part: str, fn: Callable[[], T]) -> T:
        began = time.perf_counter()
        profiler.enable()
        try:
            return fn()
        finally:
            profiler.disable()
            parts[part] += time.perf_counter() - began

    try:
        await bootstrap(services, load_example=False)
        source = folder / "voters.csv"
        voter_file(source, rows)
        imports, store = services.imports, services.store
        prepared = timed("first pass", lambda: prepare(source, FileFormat.CSV, imports.region))
        report = Report()
        chunks = prepared.chunks(imports.batch_size)
        while (chunk := timed("reading items", lambda: next(chunks, None))) is not None:
            run = partial(imports.batch, items=chunk, dry_run=False, actor="bench")
            report.add(timed("batches", partial(store.run_tenant, SYSTEM.tenant, run, True)))
        prepared.discard()
    finally:
        await services.store.close()
        drop_database(database)
    profiler.dump_stats(out)
    text = io.StringIO()
    total = sum(parts.values())
    print(f"{kind}: {rows:,} rows in {total:.1f} s under the profiler ({rows / total:,.0f} rows/s): ", file=text)
    print("  " + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in parts.items()), file=text)
    counts = (report.created, report.updated, report.unchanged, report.rejected)
    print(f"  (created, updated, unchanged, rejected): {counts}", file=text)
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(50)
    return text.getvalue()


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
    parser.add_argument("--profile", action="store_true", help="profile one first import per store instead")
    args = parser.parse_args()
    os.environ["CBW_BENCH_POSTGRES"] = args.postgres
    if args.profile:
        results_dir = Path(__file__).parent / "results"
        results_dir.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for kind in args.stores.split(","):
            with tempfile.TemporaryDirectory() as folder:
                out = results_dir / f"import-{kind}-{stamp}.prof"
                print(asyncio.run(profile_store(kind, args.rows, Path(folder), out)))
        return
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
