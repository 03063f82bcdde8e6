"""Moving running voters to a new version: N running instances, a dry run then the real run, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_migrate.py [--instances 10000] [--runs 3] [--stores sqlite,postgresql]

Per run, a fresh store: N contacts (bench_core's `fill_contacts`), all enrolled and started in a template whose
start node is a 80/20 `split` between a call (a task) and a three-day wait. The template then gets a second
version: the call renamed `ring`, the wait removed. Timed, inside this process, through `services/migration.py`
with the inline limit above N (one request's work, a batch of 500 per transaction):
- the dry run (`node_map {"call": "ring"}`): counts only;
- the real run: each of the ~80% at the call moves (its row saved, rebased on the new snapshot, one
  `instance_migrated` event); the ~20% at the removed wait stay, counted as unmapped.
Checked each run: the real run's counts equal the dry run's, and the store holds what they say.
Baseline, same run, same store: a bare `UPDATE instances SET template_version = …` of the moved rows, 500 ids per
statement, each its own transaction (the floor of rewriting those rows, with no engine, no event, no check).
Reported per store: median (min-max) seconds of the dry run, the real run and the baseline, instances/s, and the
ratio of the real run to the baseline. Results: bench/results/migrate-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_bulk import Place
from bench_core import TOKEN, fill_contacts
from cbworkflow.models.instances import BulkEnrol
from cbworkflow.models.migration import MigrateRequest, MigrationResult
from cbworkflow.models.templates import TemplateCreate, TemplatePatch
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

V1 = {
    "id": "drive",
    "name": "Drive",
    "start_node": "split",
    "contact_hours": {"start": "00:00", "end": "24:00"},
    "nodes": {
        "split": {
            "type": "split",
            "weights": {"call": 80, "wait": 20},
            "transitions": {"call": "call", "wait": "wait"},
        },
        "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
        "wait": {
            "type": "wait",
            "wait_condition": {"type": "duration", "duration": "P3D"},
            "transitions": {"elapsed": "end"},
        },
        "end": {"type": "end"},
    },
}
V2_NODES = {
    "split": {"type": "split", "weights": {"ring": 1}, "transitions": {"ring": "ring"}},
    "ring": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
    "end": {"type": "end"},
}


async def one_run(kind: str, work: Path, instances: int) -> dict[str, Any]:
    place = Place(kind, work)
    settings = Settings(
        data_dir=place.folder, database_url=place.url, admin_token=TOKEN, bulk_inline_limit=instances * 2
    )
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=False)
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(V1))
        await fill_contacts(services, instances, random.Random(7))
        enrolled = await services.bulk.enrol(SYSTEM, BulkEnrol.model_validate({"template_id": "drive", "start": True}))
        assert getattr(enrolled, "enrolled", 0) == instances, enrolled
        await services.templates.patch(SYSTEM, "drive", TemplatePatch.model_validate({"nodes": V2_NODES}))
        body = {"from_version": "1.0.0", "node_map": {"call": "ring"}}

        began = time.perf_counter()
        dry = await services.migration.migrate(SYSTEM, "drive", MigrateRequest.model_validate(body))
        dry_s = time.perf_counter() - began
        began = time.perf_counter()
        real = await services.migration.migrate(
            SYSTEM, "drive", MigrateRequest.model_validate(body | {"dry_run": False})
        )
        real_s = time.perf_counter() - began
        assert isinstance(dry, MigrationResult)
        assert isinstance(real, MigrationResult)
        assert (dry.moved, dry.unmapped) == (real.moved, real.unmapped), (dry, real)
        moved = sum(n for targets in real.moved.values() for n in targets.values())
        unmapped = sum(real.unmapped.values())
        assert moved + unmapped == instances
        stored = place.query("SELECT template_version, count(*) FROM instances GROUP BY template_version")
        assert dict(stored) == {"1.1.0": moved, "1.0.0": unmapped}, stored
    finally:
        await services.store.close()
    baseline_s = bare_update(place)
    place.drop()
    return {"dry_s": dry_s, "real_s": real_s, "baseline_s": baseline_s, "moved": moved, "unmapped": unmapped}


def bare_update(place: Place) -> float:
    """The floor: the moved rows' version rewritten, 500 ids per statement and transaction."""
    ids = [row[0] for row in place.query("SELECT id FROM instances WHERE template_version = '1.1.0'")]
    conn = place.connect()
    try:
        began = time.perf_counter()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(["%s" if place.pg else "?"] * len(chunk))
            conn.execute("BEGIN" if place.pg else "BEGIN IMMEDIATE")
            conn.execute(f"UPDATE instances SET template_version = '1.2.0' WHERE id IN ({marks})", chunk)
            conn.execute("COMMIT")
        return time.perf_counter() - began
    finally:
        conn.close()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    results: dict[str, Any] = {"instances": args.instances, "runs": args.runs, "stores": {}}
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.stores.split(","):
            runs = [asyncio.run(one_run(kind, Path(folder), args.instances)) for _ in range(args.runs)]
            dry, real, base = ([r[key] for r in runs] for key in ("dry_s", "real_s", "baseline_s"))
            moved = statistics.median(r["moved"] for r in runs)
            results["stores"][kind] = {"runs": runs}
            print(f"{kind}: {args.instances} instances, {moved:.0f} moved, the rest unmapped")
            print(f"  dry run   {summary(dry)}  {args.instances / statistics.median(dry):,.0f} instances/s")
            print(f"  real run  {summary(real)}  {moved / statistics.median(real):,.0f} moves/s")
            print(f"  baseline  {summary(base)}  bare UPDATE of the moved rows")
            print(f"  real run / baseline: {statistics.median(real) / statistics.median(base):.1f}x")
    out = Path(__file__).parent / "results" / f"migrate-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
