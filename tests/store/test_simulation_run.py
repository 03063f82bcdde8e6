"""A dry run has no side effect at all, on every store: the store is only read (no write transaction is even
opened), and the model, the webhooks and the executors are never called, though the template has all of them."""

from __future__ import annotations

from typing import Any

import pytest
from test_engine_run import Engine, engine, run

from cbworkflow.models.simulation import SimulateRequest
from cbworkflow.store.base import InstanceFilter, PageRequest
from cbworkflow.wiring import SYSTEM

__all__ = ["engine"]  # the fixture, on each store

EVERYTHING = {
    "id": "everything",
    "name": "Everything",
    "start_node": "text",
    "nodes": {
        "text": {
            "type": "action",
            "action": "sms",
            "action_config": {"message": "Hi {contact.name}"},
            "transitions": {"sent": "ask", "failed": "hook"},
        },
        "ask": {
            "type": "decision",
            "rule": {"type": "ai", "prompt": "Is {contact.name} keen?", "fallback": "no"},
            "transitions": {"yes": "hook", "no": "done"},
        },
        "hook": {
            "type": "webhook",
            "webhook_url": "https://crm.example.org/hook",
            "transitions": {"success": "tell", "failure": "done"},
        },
        "tell": {
            "type": "action",
            "action": "emit_event",
            "action_config": {"event": "keen"},
            "transitions": {"sent": "done"},
        },
        "done": {"type": "end"},
    },
}


def test_a_dry_run_reads_the_store_and_calls_nothing(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        await engine.template(EVERYTHING)
        store = engine.services.store
        writes: list[str] = []

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            writes.append(repr(args)[:80])
            raise AssertionError("a dry run wrote to the store")

        monkeypatch.setattr(store, "write", refuse)
        monkeypatch.setattr(store, "system_write", refuse)
        found = await engine.services.simulation.of_stored(
            SYSTEM, "everything", SimulateRequest(contact={"name": "Ada", "phone": "+14155550100"})
        )
        monkeypatch.undo()

        assert writes == []
        assert engine.script.asked == []  # no model, no webhook, no executor
        assert len(found.paths) == 5
        routes = [[(s.node, s.outcome) for s in p.steps] for p in found.paths]
        # every path once (their order follows the stored outcome order, which PostgreSQL's JSONB does not keep)
        assert [("text", "sent"), ("ask", "yes"), ("hook", "success"), ("tell", "sent")] in routes
        assert [("text", "failed"), ("hook", "failure")] in routes
        assert len({tuple(route) for route in routes}) == 5
        instances = await engine.services.instances.list(
            "default", InstanceFilter(template_id="everything"), PageRequest(limit=10)
        )
        assert instances.items == []

    run(engine, go())
