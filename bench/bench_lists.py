"""Contact search and "list by tag and county" at a million contacts, on SQLite and PostgreSQL, through the services.

    .venv/bin/python bench/bench_lists.py [--contacts 1000000] [--queries 300] [--runs 3] [--stores sqlite,postgresql]

Per store kind, once: a store filled with `--contacts` contacts through the store's batched path
(`Tx.insert_contacts`, 5,000 per transaction), then settled (PostgreSQL: VACUUM ANALYZE, what autovacuum does
after a bulk load; SQLite: WAL checkpoint). The filled store is kept between runs in the temp dir, keyed by
size and schema version (SQLite: a file copied per run; PostgreSQL: a database each run copies with
`CREATE DATABASE ... TEMPLATE`), so a re-run skips the fill.
Per run, on a fresh copy, limit 50, as the API calls them:
- `ContactService.search` over `--queries` selective queries (surname fragments, emails, phone digits, one- and
  two-letter prefixes): p50 / p95 / p99;
- the same over unselective queries (a single common letter, common name fragments such as "son", "ann"): p99;
- `ContactService.list` with a tag and a county (the first page): p50 / p95.
There is no baseline: the targets are absolute (search p95 <= 5 ms SQLite, <= 25 ms PostgreSQL; unselective p99
<= 50 ms; tag and county p95 <= 10 ms). Prints one JSON object per store; `--out` writes them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
from cbworkflow.models.contacts import Contact
from cbworkflow.settings import Settings
from cbworkflow.store import migrations
from cbworkflow.store.base import PageRequest, Tx
from cbworkflow.store.filters import ContactFilter
from cbworkflow.wiring import bootstrap, build_services

TOKEN = "bench-lists-token-0123456789abcdef"
BATCH = 5000
FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard Susan Joseph"
    " Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Margaret Donald Sandra Steven"
    " Ashley Paul Kimberly Andrew Emily Joshua Donna Kenneth Michelle Kevin Dorothy Brian Carol George Amanda Ada"
    " Grace Alan Maria Jose Wei Fatima Olu Ivan Priya Liam Noor Sven Ana Mohammed Aisha Chen Yuki Kwame Ines"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson"
    " Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis"
    " Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera"
    " Campbell Mitchell Carter Roberts Lovelace Hopper Turing Okafor Ivanova Patel Berg Khan Kowalski Oyelaran"
    " Fitzgerald Castellanos Abernathy Vasquez Lindqvist Takahashi"
).split()
COUNTIES = [f"{name} County" for name in "Kent Sussex Essex Dorset Devon Cork Mayo Clare Kerry Meath".split()] + [
    f"County {n}" for n in range(20)
]
TAGS = {"voter": 0.7, "lapsed": 0.2, "new": 0.15, "donor": 0.1, "volunteer": 0.05, "precinct-captain": 0.005}
UNSELECTIVE = ["a", "e", "son", "ann", "mar", "example"]


def person(rng: random.Random, i: int, tenant: str, when: datetime) -> Contact:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    tags = [tag for tag, share in TAGS.items() if rng.random() < share]
    return Contact(
        id=f"c{i:09d}",
        tenant=tenant,
        name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower()}{i}@example.org",
        phone=f"({area}) {exchange}-{line:04}",
        phone_e164=f"+1{area}{exchange}{line:04}",
        county=rng.choice(COUNTIES),
        tags=tags,
        created_at=when,
        updated_at=when,
    )


async def fill(place: harness.Place, contacts: int) -> float:
    """`contacts` contacts in the default tenant, written 5,000 per transaction; the seconds it took."""
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN)
    services = await build_services(settings)
    began = time.perf_counter()
    try:
        await bootstrap(services, load_example=False)
        rng = random.Random(12)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for first in range(0, contacts, BATCH):
            ahead = range(first, min(first + BATCH, contacts))
            batch = [person(rng, i, "default", start + timedelta(seconds=i)) for i in ahead]

            def write(tx: Tx, batch: list[Contact] = batch) -> None:
                tx.insert_contacts(batch)

            await services.store.write("default", write)
            if first and first % 100_000 == 0:
                print(f"  {place.kind}: {first:,} contacts, {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        await services.store.close()
    place.settle(vacuum=True)
    return time.perf_counter() - began


def cache_name(kind: str, contacts: int) -> str:
    return f"cbw_bench_lists_{contacts}_m{migrations.LATEST}_v_{kind}"  # v: vacuumed after the fill


def seed(kind: str, contacts: int, cache: Path) -> tuple[harness.Place | None, str | None, float | None]:
    """The filled store each run copies, from the cache when it is there: (a SQLite place, or the PostgreSQL
    database's name) and the fill's seconds when it was filled now."""
    name = cache_name(kind, contacts)
    if kind == "postgresql":
        if harness.pg_database_exists(name):
            return None, name, None
        place = harness.Place(kind, cache / "tmp")
        try:
            seconds = asyncio.run(fill(place, contacts))
            with harness.psycopg.connect(harness.POSTGRES, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{place.database}" RENAME TO "{name}"')
        except BaseException:
            place.drop()
            raise
        shutil.rmtree(place.folder, ignore_errors=True)
        return None, name, seconds
    cached = cache / name / "cbworkflow.db"
    holder = harness.Place.existing(cached.parent)
    if cached.exists():
        return holder, None, None
    place = harness.Place(kind, cache / "tmp")
    try:
        seconds = asyncio.run(fill(place, contacts))
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(place.db, cached.with_suffix(".partial"))
        cached.with_suffix(".partial").rename(cached)
    finally:
        place.drop()
    return holder, None, seconds


def stored(contacts: int) -> list[Contact]:
    """The first contacts `fill` wrote (made again from the same seed), for queries that find someone."""
    rng, start = random.Random(12), datetime(2026, 1, 1, tzinfo=UTC)
    return [person(rng, i, "default", start + timedelta(seconds=i)) for i in range(min(contacts, 20_000))]


def queries(rng: random.Random, count: int, contacts: int) -> list[str]:
    """Selective searches a person types: surname fragments, an email (whole, or its name part), phone digits (a
    stored number's last seven, or seven at random), full names, one or two letters."""
    known = stored(contacts)
    found = []
    for n in range(count):
        kind, someone = n % 5, rng.choice(known)
        if kind == 0:
            last = rng.choice(LAST).lower()
            start = rng.randrange(max(1, len(last) - 3))
            found.append(last[start : start + rng.randint(4, 6)])
        elif kind == 1:
            email = someone.email or ""
            found.append(email if n % 2 else email.split("@")[0])
        elif kind == 2:
            digits = (someone.phone_e164 or "")[-7:]
            found.append(digits if n % 2 else f"{rng.randint(200, 999)}{rng.randint(0, 9999):04}")
        elif kind == 3:
            found.append(f"{rng.choice(FIRST)} {rng.choice(LAST)}")
        else:
            found.append(rng.choice(LAST)[: rng.randint(1, 2)])
    return found


async def measure(place: harness.Place, count: int, contacts: int) -> dict[str, Any]:
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN)
    services = await build_services(settings)
    rng = random.Random(99)
    page = PageRequest(limit=50)
    try:
        for q in ("warm", "ab", "smith"):  # the first reads fill caches: not what a busy server sees
            await services.contacts.search("default", q, page)
        selective, unselective, listed, sizes = [], [], [], []
        for q in queries(rng, count, contacts):
            began = time.perf_counter()
            found = await services.contacts.search("default", q, page)
            selective.append((time.perf_counter() - began) * 1000)
            sizes.append(len(found.items))
        for n in range(max(count // 3, len(UNSELECTIVE))):
            q = UNSELECTIVE[n % len(UNSELECTIVE)]
            began = time.perf_counter()
            await services.contacts.search("default", q, page)
            unselective.append((time.perf_counter() - began) * 1000)
        for _ in range(count):
            where = ContactFilter(tags=[rng.choice(list(TAGS))], county=rng.choice(COUNTIES))
            began = time.perf_counter()
            await services.contacts.list("default", where, page)
            listed.append((time.perf_counter() - began) * 1000)
    finally:
        await services.store.close()
    p = harness.percentile
    return {
        "search_p50_ms": round(p(selective, 0.5), 2),
        "search_p95_ms": round(p(selective, 0.95), 2),
        "search_p99_ms": round(p(selective, 0.99), 2),
        "search_mean_results": round(sum(sizes) / len(sizes), 1),
        "unselective_p50_ms": round(p(unselective, 0.5), 2),
        "unselective_p99_ms": round(p(unselective, 0.99), 2),
        "tag_county_p50_ms": round(p(listed, 0.5), 2),
        "tag_county_p95_ms": round(p(listed, 0.95), 2),
        "tag_county_p99_ms": round(p(listed, 0.99), 2),
    }


def run_store(kind: str, contacts: int, runs: int, count: int, cache: Path | None, work: Path) -> dict[str, Any]:
    if cache is None:  # a seed of this run's own, dropped at the end
        own = harness.Place(kind, work)
        fill_s = asyncio.run(fill(own, contacts))
        try:
            return measure_runs(kind, contacts, runs, count, own if not own.pg else None, own.database, fill_s, work)
        finally:
            own.drop()
    holder, database, fill_s = seed(kind, contacts, cache)
    return measure_runs(kind, contacts, runs, count, holder, database, fill_s, work)


def measure_runs(
    kind: str,
    contacts: int,
    runs: int,
    count: int,
    holder: harness.Place | None,
    database: str | None,
    fill_s: float | None,
    work: Path,
) -> dict[str, Any]:
    """`runs` measures, each on its own copy of the seed (`holder`'s SQLite file or the PostgreSQL `database`)."""
    result: dict[str, Any] = {"store": kind, "contacts": contacts, "fill_s": fill_s and round(fill_s, 1), "runs": []}
    for _ in range(runs):
        place = harness.Place(kind, work, like=holder, template=database)
        try:
            load = harness.loadavg()
            figures = asyncio.run(measure(place, count, contacts))
            figures["load"] = load
            result["runs"].append(figures)
            print(f"  {kind}: {json.dumps(figures)}", flush=True)
        finally:
            place.drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300, help="selective searches and lists per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cbw-bench-cache")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--no-cache", action="store_true", help="fill a store of this run's own, kept nowhere")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-lists-"))
    try:
        results = [
            run_store(kind, args.contacts, args.runs, args.queries, None if args.no_cache else args.cache, work)
            for kind in args.stores.split(",")
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    sys.exit(main())
