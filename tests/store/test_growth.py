"""A table grown by bulk loads is analysed again, so the planner's statistics follow a big import (`growth.py`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cbworkflow.models.contacts import Contact
from cbworkflow.store import growth
from cbworkflow.store.base import Tx
from cbworkflow.store.growth import Growth
from cbworkflow.store.postgres import PostgresStore
from conftest import migrated_postgres_store

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


class Analyses:
    """A fake `analyse`: records the tables, answers a size, and can be held or made to fail."""

    def __init__(self, rows: int = 0) -> None:
        self.tables: list[str] = []
        self.rows = rows
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, table: str) -> int:
        self.gate.wait(5)
        self.tables.append(table)
        if self.fail:
            raise RuntimeError("the database went away")
        return self.rows


def test_a_table_is_analysed_once_it_has_grown_by_the_floor() -> None:
    analyses = Analyses(rows=40_000)
    grown = Growth(analyses)
    grown.add({"contacts": growth.FLOOR - 1, "events": 5})
    grown.wait()
    assert analyses.tables == []
    grown.add({"contacts": 1})
    grown.wait()
    assert analyses.tables == ["contacts"]
    # now half of the 40,000 rows it holds: 20,000 more before the next analysis
    grown.add({"contacts": 19_999})
    grown.wait()
    assert analyses.tables == ["contacts"]
    grown.add({"contacts": 1})
    grown.wait()
    assert analyses.tables == ["contacts", "contacts"]


def test_one_analysis_at_a_time_and_what_came_meanwhile_counts_later() -> None:
    analyses = Analyses()
    analyses.gate.clear()
    grown = Growth(analyses)
    grown.add({"contacts": growth.FLOOR})
    grown.add({"instances": growth.FLOOR})  # while the first runs: counted, not started
    analyses.gate.set()
    grown.wait()
    assert analyses.tables == ["contacts"]
    grown.add({"events": 1})  # the next commit starts what is due
    grown.wait()
    assert analyses.tables == ["contacts", "instances"]


def test_a_failed_analysis_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    analyses = Analyses()
    analyses.fail = True
    grown = Growth(analyses)
    with caplog.at_level(logging.WARNING, logger="cbworkflow.store"):
        grown.add({"contacts": growth.FLOOR})
        grown.wait()
    assert "could not analyse contacts" in caplog.text
    analyses.fail = False
    grown.add({"contacts": growth.FLOOR})
    grown.wait()
    assert analyses.tables == ["contacts", "contacts"]


def test_a_closed_growth_starts_no_analysis() -> None:
    analyses = Analyses()
    grown = Growth(analyses)
    grown.close()
    grown.add({"contacts": growth.FLOOR * 10})  # a transaction that ended as the store closed
    grown.wait()
    assert analyses.tables == []


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    with migrated_postgres_store() as made:
        yield made


def _analysed(store: PostgresStore) -> tuple[int, int]:
    """(times contacts was analysed by hand, its rows as the statistics say)."""
    with store._engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT s.analyze_count, c.reltuples::bigint FROM pg_stat_user_tables s"
            " JOIN pg_class c ON c.oid = s.relid WHERE s.relname = 'contacts'"
        ).one()
    return int(found[0]), int(found[1])


def test_a_bulk_load_on_postgresql_is_followed_by_fresh_statistics(store: PostgresStore) -> None:
    before, _ = _analysed(store)
    batch = growth.FLOOR // 4  # each by the bulk path (100 rows or more)

    def write(first: int) -> None:
        people = [
            Contact(id=f"c{i:06d}", tenant="t", name=f"Voter {i}", created_at=T0 + timedelta(seconds=i), updated_at=T0)
            for i in range(first, first + batch)
        ]

        def insert(tx: Tx) -> None:
            tx.insert_contacts(people)

        asyncio.run(store.write("t", insert))

    for first in range(0, growth.FLOOR, batch):
        write(first)
    store._growth.wait()
    deadline = time.monotonic() + 10  # the statistics collector reports the count a moment after
    while (found := _analysed(store))[0] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    count, rows = found
    assert count == before + 1
    assert rows == growth.FLOOR
