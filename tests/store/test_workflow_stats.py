"""Campaign numbers (`GET /api/workflows/{id}/stats`) agree with a count made by hand over the instances.

Instances walk random paths through a template with loops, manual steps and three end statuses, on a clock moved
by random amounts; some are paused, cancelled, moved or deleted on the way. The stats the store keeps with every
step are then compared with what the instances and their timelines say, all-time and in a window, on each store.
Also: the counts of a database made before them (migration 6, the JSON store's format 2), and the index the read
walks.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from cbworkflow.clock import FakeClock
from cbworkflow.errors import InvalidInput, NotFound
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.events import Event, EventType
from cbworkflow.models.instances import BulkContacts, BulkEnrol, InstanceCreate, MoveRequest, TransitionRequest
from cbworkflow.models.stats import WorkflowStats
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.settings import Settings
from cbworkflow.store.base import PageRequest
from cbworkflow.store.filters import InstanceFilter
from cbworkflow.store.tallies import BUCKET_BASE
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import PostgresDatabase

TEMPLATE: dict[str, Any] = {
    "id": "phone-bank",
    "name": "Phone bank",
    "start_node": "call",
    "nodes": {
        "call": {
            "type": "action",
            "action": "phone_call",
            "transitions": {"answered": "ask", "no_answer": "call_again", "refused": "end_declined"},
        },
        "call_again": {
            "type": "action",
            "action": "phone_call",
            "transitions": {"answered": "ask", "no_answer": "end_unreached"},
        },
        "ask": {
            "type": "decision",
            "rule": {"type": "manual"},
            "transitions": {"yes": "end_yes", "no": "end_declined", "later": "call"},
        },
        "end_yes": {"type": "end", "end_status": "success"},
        "end_declined": {"type": "end", "end_status": "declined"},
        "end_unreached": {"type": "end", "end_status": "unreached"},
    },
}
START = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
WALKERS = {"json": 250}  # the file store is for small campaigns: a quarter of the walkers keeps the test short


class Campaign:
    """Services on one store with a clock moved by hand."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.database = PostgresDatabase(migrated=True) if kind == "postgresql" else None
        url = {"postgresql": self.database.url if self.database else None, "json": f"json:///{tmp / 'files'}"}
        self.settings = Settings(data_dir=tmp, database_url=url.get(kind), admin_token="stats-test-token-0123456789")
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(START)
        self.services: Any = None
        self.open()

    def open(self) -> None:
        self.services = self.run(build_services(self.settings, clock=self.clock))
        self.run(bootstrap(self.services, load_example=False))

    def close(self) -> None:
        self.run(self.services.store.close())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def stats(self, since: datetime | None = None, until: datetime | None = None) -> WorkflowStats:
        return self.run(self.services.stats.of_template(SYSTEM.tenant, TEMPLATE["id"], since, until))  # type: ignore[no-any-return]

    def dispose(self) -> None:
        self.close()
        self.loop.close()
        if self.database is not None:
            self.database.drop()


@pytest.fixture(params=["sqlite", "postgresql", "json"])
def campaign(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Campaign]:
    made = Campaign(request.param, tmp_path)
    try:
        yield made
    finally:
        made.dispose()


async def _walk(c: Campaign, instances: int, seed: int) -> None:
    """Enrol `instances` contacts and move each along a random path, the clock jumping between steps."""
    services, rng = c.services, random.Random(seed)
    await services.templates.create(SYSTEM, TemplateCreate.model_validate(TEMPLATE))
    for n in range(instances):
        await services.contacts.create(SYSTEM, ContactCreate(name=f"Voter {n}", county="Kent" if n % 2 else "Essex"))
    # Half by bulk enrolment (its batches count like single steps), half one at a time.
    result = await services.bulk.enrol(
        SYSTEM, BulkEnrol(template_id=TEMPLATE["id"], start=True, contacts=BulkContacts(county="Kent"))
    )
    assert result.enrolled == instances // 2
    async for _ in services.bulk.batches(SYSTEM.tenant, "test", BulkEnrol(template_id=TEMPLATE["id"], start=True)):
        pass
    ids: list[str] = []
    page = PageRequest(limit=500)
    while True:
        found = await services.instances.list(SYSTEM.tenant, InstanceFilter(template_id=TEMPLATE["id"]), page)
        ids.extend(i.id for i in found.items)
        if found.next_cursor is None:
            break
        page = PageRequest(limit=500, cursor=found.next_cursor)
    assert len(ids) == instances
    nodes = TEMPLATE["nodes"]
    for step in range(8):
        rng.shuffle(ids)
        for instance_id in ids:
            if rng.random() < 0.3:
                continue  # this one waits a round
            instance = await services.instances.get(SYSTEM, instance_id)
            if instance.status.value not in ("active", "waiting"):
                if instance.status.value == "paused" and rng.random() < 0.5:
                    await services.instances.resume(SYSTEM, instance_id)
                continue
            c.clock.advance(timedelta(seconds=rng.choice([0.0004, 3, 40, 700, 5_000, 90_000])))
            roll = rng.random()
            if roll < 0.03:
                await services.instances.pause(SYSTEM, instance_id)
            elif roll < 0.05:
                await services.instances.cancel(SYSTEM, instance_id, reason="moved away")
            elif roll < 0.06 and step > 2:
                await services.instances.move(SYSTEM, instance_id, MoveRequest(node="ask", reason="asked in person"))
            else:
                outcome = rng.choice(sorted(nodes[instance.current_node]["transitions"]))
                await services.instances.transition(SYSTEM, instance_id, TransitionRequest(outcome=outcome))


async def _by_hand(c: Campaign) -> tuple[list[Any], list[Event]]:
    services = c.services
    instances, events = [], []
    page = PageRequest(limit=500)
    while True:
        found = await services.instances.list(SYSTEM.tenant, InstanceFilter(template_id=TEMPLATE["id"]), page)
        instances.extend(found.items)
        if found.next_cursor is None:
            break
        page = PageRequest(limit=500, cursor=found.next_cursor)
    for instance in instances:
        events_page = PageRequest(limit=500)
        while True:
            timeline = await services.instances.timeline(SYSTEM, instance.id, events_page)
            events.extend(timeline.items)
            if timeline.next_cursor is None:
                break
            events_page = PageRequest(limit=500, cursor=timeline.next_cursor)
    return instances, events


def _lower_median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) + 1) // 2 - 1]


def _expected(instances: list[Any], events: list[Event], exits: list[Event] | None = None) -> dict[str, Any]:
    """What the stats must say, counted from the instances and their events (the times spent from `exits`, when
    they differ: a window's medians count the visits that ended on the days it touches)."""
    current: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for instance in instances:
        statuses[instance.status.value] += 1
        if instance.status.value in ("pending", "active", "waiting", "paused") and instance.current_node:
            current[instance.current_node] += 1
    entered: Counter[str] = Counter()
    outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    spent: defaultdict[str, list[float]] = defaultdict(list)
    ends: Counter[str] = Counter()
    for event in events:
        if event.type is EventType.NODE_ENTERED:
            entered[event.node_id or ""] += 1
        elif event.type is EventType.NODE_EXITED:
            outcomes[event.node_id or ""][event.data["outcome"]] += 1
            if exits is None:
                spent[event.node_id or ""].append(event.data["seconds"])
        elif event.type is EventType.INSTANCE_COMPLETED:
            ends[event.data["end_status"]] += 1
    for event in exits or []:
        if event.type is EventType.NODE_EXITED:
            spent[event.node_id or ""].append(event.data["seconds"])
    return {
        "current": current,
        "statuses": statuses,
        "entered": entered,
        "outcomes": outcomes,
        "medians": {node: _lower_median(v) for node, v in spent.items()},
        "ends": ends,
    }


def _agree(stats: WorkflowStats, want: dict[str, Any], *, now_too: bool = True) -> None:
    for node_id, numbers in stats.nodes.items():
        if now_too:
            assert numbers.current == want["current"][node_id], node_id
        assert numbers.entered == want["entered"][node_id], node_id
        assert numbers.outcomes == dict(want["outcomes"][node_id]), node_id
        median = want["medians"].get(node_id)
        if median is None:
            assert numbers.median_seconds is None, node_id
        elif median < 0.001:
            assert numbers.median_seconds == 0, node_id
        else:  # the histogram's bucket: within half a bucket's width of the exact value
            assert numbers.median_seconds is not None, node_id
            assert median / BUCKET_BASE**0.5 <= numbers.median_seconds * 1.0001, node_id
            assert numbers.median_seconds <= median * BUCKET_BASE**0.5 * 1.0001, node_id
    assert set(stats.nodes) == set(TEMPLATE["nodes"])
    if now_too:
        assert {k: v for k, v in stats.statuses.items() if v} == dict(want["statuses"])
    assert {k: v for k, v in stats.end_statuses.items() if v} == dict(want["ends"])


@pytest.mark.slow
def test_stats_agree_with_a_count_by_hand_over_a_thousand_random_walks(campaign: Campaign) -> None:
    c = campaign
    walkers = WALKERS.get(c.kind, 1_000)
    c.run(_walk(c, walkers, seed=7))
    instances, events = c.run(_by_hand(c))
    assert len(instances) == walkers
    _agree(c.stats(), _expected(instances, events))
    # A window counts only what happened inside it (whole hours); where instances are is still now.
    times = sorted(e.timestamp for e in events)
    since = times[len(times) // 3].replace(minute=0, second=0, microsecond=0)
    until = since + timedelta(hours=30)
    window = c.stats(since, until)
    assert (window.since, window.until) == (since, until)
    day = since.replace(hour=0)
    inside = _expected(
        instances,
        [e for e in events if since <= e.timestamp < until],
        [e for e in events if day <= e.timestamp < until],
    )
    assert sum(inside["entered"].values()) > 0
    _agree(window, {**inside, "current": _expected(instances, events)["current"]}, now_too=False)
    assert window.statuses == c.stats().statuses
    # Only `since`, only `until`, and a window before anything happened.
    after = _expected(instances, [e for e in events if e.timestamp >= since], [e for e in events if e.timestamp >= day])
    _agree(c.stats(since=since), after, now_too=False)
    _agree(c.stats(until=until), _expected(instances, [e for e in events if e.timestamp < until]), now_too=False)
    empty = c.stats(START - timedelta(days=3), START - timedelta(days=2))
    assert all(n.entered == 0 and not n.outcomes and n.median_seconds is None for n in empty.nodes.values())


def test_a_deleted_instance_leaves_where_it_was_but_what_it_did_stays_counted(campaign: Campaign) -> None:
    c = campaign
    c.run(_walk(c, 4, seed=3))
    contact = c.run(c.services.contacts.create(SYSTEM, ContactCreate(name="Late Voter")))
    gone = c.run(
        c.services.instances.create(SYSTEM, InstanceCreate(contact_id=contact.id, template_id="phone-bank", start=True))
    )
    before = c.stats()
    c.run(c.services.instances.delete(SYSTEM, gone.id))
    after = c.stats()
    assert after.nodes[gone.current_node].current == before.nodes[gone.current_node].current - 1
    assert after.statuses[gone.status.value] == before.statuses[gone.status.value] - 1
    assert {n: v.entered for n, v in after.nodes.items()} == {n: v.entered for n, v in before.nodes.items()}


def test_a_window_must_end_after_it_starts_and_a_missing_template_is_not_found(campaign: Campaign) -> None:
    c = campaign
    c.run(c.services.templates.create(SYSTEM, TemplateCreate.model_validate(TEMPLATE)))
    with pytest.raises(InvalidInput, match="until"):
        c.stats(START, START - timedelta(hours=1))
    with pytest.raises(NotFound):
        c.run(c.services.stats.of_template(SYSTEM.tenant, "no-such-template"))
    fresh = c.stats()
    assert fresh.statuses == dict.fromkeys(
        ["pending", "active", "waiting", "paused", "completed", "failed", "cancelled"], 0
    )
    assert fresh.end_statuses == {"success": 0, "declined": 0, "unreached": 0}
    assert all(n.current == n.entered == 0 and n.median_seconds is None for n in fresh.nodes.values())


# ---------------------------------------------------------------------------------------------- stores made before
def _sql_url(c: Campaign) -> str:
    return c.database.url if c.database else f"sqlite:///{c.settings.data_dir / 'cbworkflow.db'}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_made_before_the_counts_gets_them_from_what_it_holds(kind: str, tmp_path: Path) -> None:
    """Migration 6 counts where stored instances are and what their events say happened."""
    c = Campaign(kind, tmp_path)
    try:
        c.run(_walk(c, 60, seed=5))
        want = c.stats()
        c.close()
        engine = create_engine(_sql_url(c).replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:  # back to what version 5 made
            conn.exec_driver_sql("DROP TABLE workflow_tallies")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 6")
        engine.dispose()
        c.open()
        assert c.stats() == want
        c.close()
        c.open()  # and a second start changes nothing
        assert c.stats() == want
    finally:
        c.dispose()


def test_a_json_store_of_format_1_gets_its_counts(tmp_path: Path) -> None:
    c = Campaign("json", tmp_path)
    try:
        c.run(_walk(c, 40, seed=9))
        want = c.stats()
        c.close()
        root = tmp_path / "files"
        for counts in root.glob("*/tallies"):
            shutil.rmtree(counts)
        marker = json.loads((root / "store.json").read_text())
        (root / "store.json").write_text(json.dumps({**marker, "format": 1}))
        c.open()
        assert c.stats() == want
        assert json.loads((root / "store.json").read_text())["format"] == 2
    finally:
        c.dispose()


def test_sqlite_reads_the_counts_along_their_primary_key(tmp_path: Path) -> None:
    c = Campaign("sqlite", tmp_path)
    try:
        c.run(_walk(c, 10, seed=1))
    finally:
        c.dispose()
    with sqlite3.connect(tmp_path / "cbworkflow.db") as conn:
        for window in ("hour = 0", "((hour = 0 AND metric = 'placed') OR (hour >= 1 AND hour < 9))"):
            plan = conn.execute(
                "EXPLAIN QUERY PLAN SELECT metric, node, key, sum(n) FROM workflow_tallies "
                f"WHERE tenant = 'system' AND template_id = 'phone-bank' AND {window} GROUP BY metric, node, key"
            ).fetchall()
            details = " ".join(row[3] for row in plan)
            assert "USING INDEX sqlite_autoindex_workflow_tallies_1" in details or "PRIMARY KEY" in details, details
