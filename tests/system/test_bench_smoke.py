"""`bench/run_all.py` at tiny sizes, so the measuring instrument cannot rot unseen: every script still runs and
every figure of the table comes out with a number. No figure is judged here (timings belong to the benchmark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_postgres

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    *("--quick", "--runs", "1", "--contacts", "300", "--timers", "60", "--transitions", "400"),
    *("--requests", "64", "--instances", "100", "--sample", "30", "--queries", "10", "--history", "100", "--no-cache"),
]
SQLITE_FIGURES = [
    "HTTP transitions/s",
    "HTTP transition latency p99",
    "resident memory, idle server",
    "in-process transitions/s, SQLite",
    "in-process transitions/s, 32 at a time in one tenant, SQLite",
    "a transition at 100 events vs 10, SQLite",
    "resident memory growth over 400 transitions, SQLite",
    "60 timers due at once, 1 worker, SQLite",
    "60 timers due at once, 2 workers, SQLite",
    "timer lag p99, 1 worker, SQLite",
    "timers/s with 2 workers vs 1, SQLite",
    "peak worker memory during the 60-timer burst, SQLite",
    "contact search p95 at 300 contacts, SQLite",
    "unselective search p99 at 300 contacts, SQLite",
    "list by tag and county, first page, p95 at 300 contacts, SQLite",
]


def run_all(tmp_path: Path, *flags: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_") or k == "CBW_TEST_POSTGRES_URL"}
    command = [sys.executable, str(ROOT / "bench" / "run_all.py"), *TINY, "--results", str(tmp_path), *flags]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (json_file,) = tmp_path.glob("performance-*.json")
    (md_file,) = tmp_path.glob("performance-*.md")
    assert "| figure |" in md_file.read_text()
    report: dict[str, object] = json.loads(json_file.read_text())
    return report


def assert_figures(report: dict[str, object], expected: list[str]) -> None:
    figures = report["figures"]
    assert isinstance(figures, list)
    for figure in figures:
        assert isinstance(figure["median"], int | float), figure
        for value in figure["values"]:
            assert isinstance(value, int | float), figure
    names = [figure["name"] for figure in figures]
    for wanted in expected:
        assert any(name.startswith(wanted) for name in names), (wanted, names)


@pytest.mark.slow
def test_every_figure_on_sqlite(tmp_path: Path) -> None:
    report = run_all(tmp_path, "--stores", "sqlite")
    assert_figures(report, SQLITE_FIGURES)
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert machine["cores"]
    assert machine["sqlite"]
    assert report["load_end"]


@pytest.mark.slow
def test_postgresql_paths(tmp_path: Path) -> None:
    """The PostgreSQL-only paths of the instrument: the raw psycopg replay and the copied seed database."""
    require_postgres()
    report = run_all(tmp_path, "--stores", "postgresql", "--only", "inprocess,lists", "--memory-stores", "none")
    assert_figures(
        report,
        [
            "in-process transitions/s, PostgreSQL",
            "in-process transitions/s, 32 at a time in one tenant, PostgreSQL",
            "a transition at 100 events vs 10, PostgreSQL",
            "contact search p95 at 300 contacts, PostgreSQL",
            "list by tag and county, first page, p95 at 300 contacts, PostgreSQL",
        ],
    )
