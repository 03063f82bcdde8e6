"""The hot paths of issue 12 in one command: every figure `--runs` times beside its baseline, ratio and target.

    .venv/bin/python bench/run_all.py [--runs 3] [--contacts 1000000] [--timers 100000] [--transitions 100000]
    .venv/bin/python bench/run_all.py --quick          # small sizes: a smoke run of a few minutes

Runs bench_http.py, bench_inprocess.py, bench_timers.py and bench_lists.py (each in its own process, each also
runnable alone), reads their JSON, and prints for every figure the median of the runs with min-max, its baseline
measured in the same run, the ratio, the target and pass / miss. Writes bench/results/performance-<time>.md and
.json (or into `--results`) with the machine (cores, memory, Python, SQLite and PostgreSQL versions) and the load
average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from figures import Figure, figures_of, markdown

HERE = Path(__file__).parent
PARTS = ("http", "inprocess", "timers", "lists")
QUICK = {
    "runs": 2,
    "contacts": 2000,
    "timers": 300,
    "transitions": 3000,
    "requests": 300,
    "instances": 300,
    "sample": 150,
    "queries": 60,
    "history": 1000,
}
FULL = {
    "runs": 3,
    "contacts": 1_000_000,
    "timers": 100_000,
    "transitions": 100_000,
    "requests": 5000,
    "instances": 2000,
    "sample": 2000,
    "queries": 300,
    "history": 10_000,
}


def script(name: str, flags: list[str], out: Path) -> dict[str, Any] | list[Any]:
    """Run bench/<name> with `flags` and `--out out`; its output goes to ours as it comes; its JSON back."""
    command = [sys.executable, str(HERE / name), *flags, "--out", str(out)]
    print(f"$ {shlex.join(command[1:])}", flush=True)
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=HERE.parent)
    print(f"  ({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    found: dict[str, Any] | list[Any] = json.loads(out.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    for key, value in FULL.items():
        parser.add_argument(f"--{key}", type=int, help=f"default {value:,} ({QUICK[key]:,} with --quick)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--timer-workers", default="1,2")
    parser.add_argument("--memory-stores", default="sqlite", help="stores whose memory over --transitions is measured")
    parser.add_argument("--only", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--no-cache", action="store_true", help="bench_lists fills its stores afresh and keeps none")
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL  # a size given as 0 stays 0 (`--transitions 0`: no memory run)
    sizes = {key: defaults[key] if getattr(args, key) is None else getattr(args, key) for key in FULL}
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    runs, stores = str(sizes["runs"]), args.stores
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "command": shlex.join(sys.argv),
        "started": started.isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "load_start": harness.loadavg(),
        "sizes": sizes,
        "stores": stores.split(","),
        "results": {},
    }
    print(f"load average at start: {report['load_start']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cbw-run-all-") as folder:
        work = Path(folder)
        plan = {
            "http": (
                "bench_http.py",
                ["--runs", runs, "--requests", str(sizes["requests"]), "--instances", str(sizes["instances"])],
            ),
            "inprocess": (
                "bench_inprocess.py",
                [
                    *("--runs", runs, "--stores", stores, "--sample", str(sizes["sample"])),
                    *("--transitions", str(sizes["transitions"]), "--memory-stores", args.memory_stores),
                    *("--history", str(sizes["history"])),
                ],
            ),
            "timers": (
                "bench_timers.py",
                [
                    *("--runs", runs, "--stores", stores, "--timers", str(sizes["timers"])),
                    *("--workers", args.timer_workers),
                ],
            ),
            "lists": (
                "bench_lists.py",
                [
                    *("--runs", runs, "--stores", stores, "--contacts", str(sizes["contacts"])),
                    *("--queries", str(sizes["queries"])),
                    *(["--no-cache"] if args.no_cache else []),
                ],
            ),
        }
        for part in parts:
            name, flags = plan[part]
            load = harness.loadavg()
            report["results"][part] = {"load_before": load, "data": script(name, flags, work / f"{part}.json")}
            report["results"][part]["load_after"] = harness.loadavg()
    report["load_end"] = harness.loadavg()
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    found: list[Figure] = figures_of(report)
    report["figures"] = [figure.as_dict() for figure in found]
    text = markdown(report, found)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (args.results / f"performance-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results / f"performance-{stamp}.md").write_text(text)
    print()
    print(text)
    print(f"written: {args.results / f'performance-{stamp}.md'} (and .json)")
    missed = sum(1 for figure in found if figure.passed is False)
    print(f"{len(found)} figures, {missed} missing their target (medians of {runs} runs)")


if __name__ == "__main__":
    main()
