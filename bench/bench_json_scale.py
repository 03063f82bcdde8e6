"""Where the JSON-file store stops being a good choice: list, search and create latency as the contacts grow.

    .venv/bin/python bench/bench_json_scale.py [--sizes 1000,10000,30000] [--queries 20]

For each size, on a fresh JSON-file store, through the services: bulk-load that many contacts (not timed), then
the median and p95 of `--queries` lists filtered by a tag (first page of 50), searches, and single contact
creates. Lists and searches read every contact's file; creates touch one file (two with an external id), so
they should not grow with the size. Writes bench/results/json-scale-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import TOKEN, fill_contacts, person
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.settings import Settings
from cbworkflow.store.base import ContactFilter, PageRequest
from cbworkflow.wiring import SYSTEM, bootstrap, build_services


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[int(len(ordered) * 0.95)], 1)}


async def measure(size: int, queries: int, work: Path) -> dict[str, Any]:
    folder = work / str(size)
    settings = Settings(data_dir=folder, database_url=f"json:///{folder / 'store'}", admin_token=TOKEN)
    services = await build_services(settings)
    rng = random.Random(size)
    try:
        await bootstrap(services, load_example=True)
        await fill_contacts(services, size, rng)
        lists, searches, creates = [], [], []
        for n in range(queries):
            began = time.perf_counter()
            await services.contacts.list("default", ContactFilter(tags=[rng.choice(["voter", "donor"])]), PageRequest())
            lists.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            await services.contacts.search("default", rng.choice(["lovel", "hopper", "garcia"]), PageRequest())
            searches.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            await services.contacts.create(SYSTEM, ContactCreate(**person(rng, 10_000_000 + n)))
            creates.append((time.perf_counter() - began) * 1000)
        return {
            "contacts": size,
            "list_by_tag_ms": summary(lists),
            "search_ms": summary(searches),
            "create_ms": summary(creates),
        }
    finally:
        await services.store.close()
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-json-"))
    rows = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(await measure(size, args.queries, work))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"json-scale-{stamp}.json").write_text(json.dumps({"queries": args.queries, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
