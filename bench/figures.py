"""The table of issue 12 read out of the benchmarks' JSON: each figure with its runs, baseline, ratio and target.

Apart from run_all.py so the reading of each script's results (which runs pair with which baseline, what is
judged against the target) is in one place and the smoke test can check it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

STORE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class Figure:
    """One row of the table. `limit` applies to the median ratio when there are ratios, else to the median value;
    `at_least` says which side of it passes. Without a limit the row is reported, not judged."""

    name: str
    unit: str
    values: list[float]
    baseline: list[float] | None = None
    baseline_name: str = ""
    ratios: list[float] | None = None
    target: str = ""
    limit: float | None = None
    at_least: bool = False
    load: str = ""
    baseline_unit: str | None = None

    @property
    def judged(self) -> float | None:
        chosen = self.ratios if self.ratios else self.values
        return statistics.median(chosen) if chosen else None

    @property
    def passed(self) -> bool | None:
        if self.limit is None or self.judged is None:
            return None
        return self.judged >= self.limit if self.at_least else self.judged <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return (
            asdict(self)
            | {"median": self.judged_value(), "ratio": self.judged if self.ratios else None}
            | {"passed": self.passed}
        )

    def judged_value(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _loads(runs: list[dict[str, Any]], part: dict[str, Any]) -> str:
    found = [float(r["load"].split()[0]) for r in runs if isinstance(r, dict) and r.get("load")]
    if not found:
        found = [float(part[key].split()[0]) for key in ("load_before", "load_after") if part.get(key)]
    if not found:
        return "?"
    low, high = f"{min(found):.1f}", f"{max(found):.1f}"
    return low if low == high else f"{low}-{high}"


def _http(part: dict[str, Any]) -> list[Figure]:
    data = part["data"]
    runs = data["runs"]
    load = _loads(runs, part)
    conns, processes = data.get("connections", 32), data.get("processes", 1)
    setup = "one serve" if processes == 1 else f"{processes} serve processes"
    store = data.get("store", "sqlite")
    if store != "sqlite":
        setup += f", {STORE_NAMES.get(store, store)}"
    return [
        Figure(
            f"HTTP transitions/s ({setup}, {conns} connections)",
            "/s",
            [r["serve"]["per_s"] for r in runs],
            [r["bare"]["per_s"] for r in runs],
            "bare FastAPI, same stack",
            [r["throughput_ratio"] for r in runs],
            ">= 0.5x",
            0.5,
            True,
            load,
        ),
        Figure(
            "HTTP transition latency p99",
            "ms",
            [r["serve"]["p99_ms"] for r in runs],
            [r["bare"]["p99_ms"] for r in runs],
            "bare FastAPI p99",
            [r["p99_ratio"] for r in runs],
            "<= 3x",
            3.0,
            load=load,
        ),
        Figure(
            "HTTP transition latency p50",
            "ms",
            [r["serve"]["p50_ms"] for r in runs],
            [r["bare"]["p50_ms"] for r in runs],
            "bare FastAPI p50",
            [round(r["serve"]["p50_ms"] / r["bare"]["p50_ms"], 2) for r in runs],
            load=load,
        ),
        Figure(
            "resident memory, idle server",
            "MB",
            [data["server_idle_rss_mb"]],
            [data["bare_idle_rss_mb"]],
            "bare FastAPI idle",
            target="<= 150 MB",
            limit=150,
            load=part.get("load_before", "").split(" ")[0],
        ),
    ]


def _inprocess(part: dict[str, Any]) -> list[Figure]:
    found = []
    for store in part["data"]:
        name, runs = STORE_NAMES.get(store["store"], store["store"]), store["runs"]
        load = _loads(runs, part)
        found.append(
            Figure(
                f"in-process transitions/s, {name}",
                "/s",
                [r["service_per_s"] for r in runs],
                [r["raw_per_s"] for r in runs],
                "same statements, raw driver",
                [r["ratio"] for r in runs],
                ">= 0.5x",
                0.5,
                True,
                load,
            )
        )
        if all("concurrent_per_s" in r for r in runs):
            found.append(
                Figure(
                    f"in-process transitions/s, {store.get('concurrency', 32)} at a time in one tenant, {name}",
                    "/s",
                    [r["concurrent_per_s"] for r in runs],
                    [r["service_per_s"] for r in runs],
                    "one at a time",
                    [r["concurrent_scaling"] for r in runs],
                    load=load,
                )
            )
        found.append(
            Figure(
                f"a transition at {store.get('history_events', 10_000):,} events vs 10, {name}",
                "ms",
                [r["history"]["long_ms"] for r in runs],
                [r["history"]["short_ms"] for r in runs],
                "the same at 10 events",
                [r["history"]["ratio"] for r in runs],
                "<= 1.2x",
                1.2,
                load=load,
            )
        )
        if "memory" in store:
            memory = store["memory"]
            found.append(
                Figure(
                    f"resident memory growth over {memory['transitions']:,} transitions, {name}",
                    "%",
                    [memory["growth_pct"]],
                    [memory["rss_at_10pct_mb"]],
                    "after the first 10%",
                    target="<= 10%",
                    limit=10,
                    load=memory.get("load", "").split(" ")[0],
                    baseline_unit="MB",
                )
            )
    return found


def _timers(part: dict[str, Any]) -> list[Figure]:
    data, found = part["data"], []
    count = data["timers"]
    rows = {(row["store"], row["workers"]): row for row in data["rows"]}
    load = _loads([], part)
    for (kind, workers), row in rows.items():
        name = STORE_NAMES.get(kind, kind)
        raw_seconds = [count / rate for rate in row["raw_sql_runs"]]
        runs = row["runs"]
        found.append(
            Figure(
                f"{count:,} timers due at once, {workers} worker{'s' if workers > 1 else ''}, {name}: all fired after",
                "s",
                [r["seconds"] for r in runs],
                [round(s, 2) for s in raw_seconds],
                "raw claim-and-update, 1 process",
                [round(r["seconds"] / raw_seconds[min(i, len(raw_seconds) - 1)], 2) for i, r in enumerate(runs)],
                "<= 2x" if workers == 1 else "",
                2.0 if workers == 1 else None,
                load=load,
            )
        )
        found.append(
            Figure(
                f"timer lag p99, {workers} worker{'s' if workers > 1 else ''}, {name}",
                "s",
                [r["lag_p99_s"] for r in runs],
                target="reported",
                load=load,
            )
        )
    for kind in dict.fromkeys(kind for kind, _ in rows):
        one, two = rows.get((kind, 1)), rows.get((kind, 2))
        name = STORE_NAMES.get(kind, kind)
        if one and two:
            judged = kind == "postgresql"
            found.append(
                Figure(
                    f"timers/s with 2 workers vs 1, {name}",
                    "/s",
                    [r["timers_per_s"] for r in two["runs"]],
                    [r["timers_per_s"] for r in one["runs"]],
                    "1 worker",
                    [
                        round(b["timers_per_s"] / a["timers_per_s"], 2)
                        for a, b in zip(one["runs"], two["runs"], strict=True)
                    ],
                    ">= 1.5x" if judged else "",
                    1.5 if judged else None,
                    True,
                    load,
                )
            )
        mine = [row for row in rows.values() if row["store"] == kind]
        each = range(min(len(row["runs"]) for row in mine))
        peaks = [max(row["runs"][i].get("worker_peak_rss_mb", 0) for row in mine) for i in each]
        found.append(
            Figure(
                f"peak worker memory during the {count:,}-timer burst, {name}",
                "MB",
                peaks,
                target="<= 500 MB",
                limit=500,
                load=load,
            )
        )
    return found


def _pairs(first: list[Any], second: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(first, second, strict=True))


def _lists(part: dict[str, Any]) -> list[Figure]:
    found = []
    for store in part["data"]:
        kind = store["store"]
        search_limit = 5.0 if kind == "sqlite" else 25.0
        for label, key, target, limit in (
            ("contact search p95", "search_p95_ms", f"<= {search_limit:g} ms", search_limit),
            ("contact search p50", "search_p50_ms", "", None),
            ("contact search p99", "search_p99_ms", "", None),
            ("unselective search p99", "unselective_p99_ms", "<= 50 ms", 50.0),
            ("list by tag and county, first page, p95", "tag_county_p95_ms", "<= 10 ms", 10.0),
        ):
            found.append(
                Figure(
                    f"{label} at {store['contacts']:,} contacts, {STORE_NAMES.get(kind, kind)}",
                    "ms",
                    [r[key] for r in store["runs"]],
                    target=target,
                    limit=limit,
                    load=_loads(store["runs"], part),
                )
            )
    return found


READERS = {"http": _http, "inprocess": _inprocess, "timers": _timers, "lists": _lists}


def figures_of(report: dict[str, Any]) -> list[Figure]:
    found: list[Figure] = []
    for part, reader in READERS.items():
        if part in report["results"]:
            found += reader(report["results"][part])
    return found


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def with_spread(values: list[float] | None, unit: str = "") -> str:
    if not values:
        return "—"
    unit = "" if unit in ("", "/s") else f" {unit}"
    middle = number(statistics.median(values))
    if len(values) == 1:
        return f"{middle}{unit}"
    return f"{middle}{unit} ({number(min(values))}-{number(max(values))})"


def markdown(report: dict[str, Any], found: list[Figure]) -> str:
    m = report["machine"]
    lines = [
        f"# Hot paths, {report['started']}",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}; Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']} (autovacuum {m['postgresql_autovacuum']}); "
        f"commit {m['commit']}.",
        f"Load average (1, 5, 15 min): {report['load_start']} at the start, {report['load_end']} at the end "
        f"({report['finished']}).",
        f"Sizes: {', '.join(f'{k} {v:,}' for k, v in report['sizes'].items())}.",
        "",
        "Median of the runs (min-max); each ratio is taken per run against the baseline of the same run, then the "
        "median of those.",
        "",
        "| figure | median (min-max) | baseline, same run | ratio | target | | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in found:
        base = f"{with_spread(f.baseline, f.baseline_unit or f.unit)} ({f.baseline_name})" if f.baseline else "—"
        ratio = with_spread(f.ratios) + "x" if f.ratios else "—"
        mark = {True: "pass", False: "**miss**", None: ""}[f.passed]
        unit = f" {f.unit}" if f.unit not in ("", "/s") else (f.unit if f.unit else "")
        value = with_spread(f.values, f.unit) if unit.strip() != "/s" else with_spread(f.values) + "/s"
        lines.append(f"| {f.name} | {value} | {base} | {ratio} | {f.target} | {mark} | {f.load} |")
    return "\n".join(lines) + "\n"
