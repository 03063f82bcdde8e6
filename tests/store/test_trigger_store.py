"""The store's part of triggers and goals, on every backend: what templates listen for (kept in step with the
templates), trigger errors beside a template, and migration 10 on a database made before it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from test_store import BACKENDS, T0, Backend, backend, run, store_url, template

from cbworkflow.models.templates import Goal, Trigger, TriggerError

__all__ = ["backend"]  # the fixture, shared with the store's other tests


def test_hooks_follow_the_templates(backend: Backend) -> None:
    store = backend.open()
    asyncio.run(store.migrate())
    try:
        plain, hooked = template(tid="plain"), template(tid="hooked")
        hooked.triggers = [Trigger(on="tag_added", tag="lead")]
        hooked.goals = [Goal(id="won", on="event", event="win")]
        run(store, "a", lambda tx: (tx.insert_template(plain), tx.insert_template(hooked)))
        [found] = run(store, "a", lambda tx: tx.template_hooks(), write=False)
        assert (found.template_id, found.triggers, found.goals) == ("hooked", hooked.triggers, hooked.goals)
        assert run(store, "b", lambda tx: tx.template_hooks(), write=False) == []  # another tenant's
        error = TriggerError(at=T0, kind="trigger", which="1", on="tag_added", message="boom", contact_id="c1")
        run(store, "a", lambda tx: tx.record_trigger_errors("hooked", [error]))
        stored = run(store, "a", lambda tx: tx.get_template("hooked"), write=False)
        assert (stored.trigger_errors, stored.updated_at, stored.version) == ([error], hooked.updated_at, "1.0.0")
        assert run(store, "a", lambda tx: tx.template_hooks(), write=False)[0].trigger_errors == [error]
        stored.triggers, stored.goals, stored.updated_at = [], [], T0 + timedelta(hours=1)
        run(store, "a", lambda tx: tx.update_template(stored))
        assert run(store, "a", lambda tx: tx.template_hooks(), write=False) == []
        plain.goals = [Goal(id="g", on="contact_created")]
        run(store, "a", lambda tx: tx.update_template(plain))
        assert [h.template_id for h in run(store, "a", lambda tx: tx.template_hooks(), write=False)] == ["plain"]
        run(store, "a", lambda tx: tx.delete_template("plain"))
        assert run(store, "a", lambda tx: tx.template_hooks(), write=False) == []
    finally:
        asyncio.run(store.close())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_of_version_8_gets_hooks_and_enrolment_keys(kind: str, tmp_path: Path) -> None:
    made = BACKENDS[kind](tmp_path)
    try:
        opened = made.open()
        asyncio.run(opened.migrate())
        hooked = template(tid="hooked")
        hooked.triggers = [Trigger(on="contact_created")]
        run(opened, "a", lambda tx: tx.insert_template(hooked))
        asyncio.run(opened.close())
        engine = create_engine(store_url(made))
        with engine.begin() as conn:  # back to what version 8 made
            conn.exec_driver_sql("DROP INDEX ix_templates_hooked")
            conn.exec_driver_sql("DROP INDEX uq_instances_enrol_key")
            for table, column in (("templates", "hooks"), ("templates", "trigger_errors"), ("instances", "enrol_key")):
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = 10")
        engine.dispose()
        upgraded = made.open()
        try:
            assert asyncio.run(upgraded.migrate()) == [10]
            assert asyncio.run(upgraded.migrate()) == []
            [found] = run(upgraded, "a", lambda tx: tx.template_hooks(), write=False)
            assert (found.template_id, found.triggers) == ("hooked", hooked.triggers)
        finally:
            asyncio.run(upgraded.close())
    finally:
        made.cleanup()
