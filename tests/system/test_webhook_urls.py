"""Webhook URLs end to end: the worker renders a template's URL and a real local server records what was called.

A placeholder fills one path segment or one query value, percent-encoded, whatever the state holds: a volunteer
who records `../../admin?x=1#` as an outcome's state cannot make the call go to another path of the receiver.
One store is enough here: rendering does not depend on it (the worker's store contract runs on all three elsewhere).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.instances import InstanceCreate
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.runtime.handlers import DefaultHandlers
from cbworkflow.runtime.worker import Worker
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, Services, bootstrap, build_services
from local_servers import HttpServer

ESCAPE = "../../admin?x=1#"


@pytest.fixture
def receiver() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


def template(receiver: HttpServer) -> dict[str, Any]:
    return {
        "id": "hooks",
        "name": "Hooks",
        "start_node": "tell_crm",
        "nodes": {
            "tell_crm": {
                "type": "webhook",
                "webhook_url": receiver.url("/people/{state.path}") + "?who={contact.name}&note={state.path}",
                "webhook_body": {"path": "{state.path}"},
                "transitions": {"success": "notify", "failure": "end"},
            },
            "notify": {
                "type": "action",
                "action": "notify",
                "action_config": {"url": receiver.url("/notes/{state.dots}/{state.path}"), "body": {}},
                "transitions": {"sent": "end", "failed": "end"},
            },
            "end": {"type": "end"},
        },
    }


async def run_hooks(services: Services, receiver: HttpServer, state: dict[str, Any]) -> str:
    await services.templates.create(SYSTEM, TemplateCreate.model_validate(template(receiver)))
    contact = await services.contacts.create(SYSTEM, ContactCreate(name="Ada"))
    body = InstanceCreate(contact_id=contact.id, template_id="hooks", start=True, initial_state=state)
    instance = await services.instances.create(SYSTEM, body)
    handlers = DefaultHandlers(services.settings)
    worker = Worker(services.store, services.clock, handlers, automatic_actions=services.instances.automatic_actions)
    try:
        while await worker.run_once():
            await worker.drain()
    finally:
        await handlers.close()
    done = await services.instances.get(SYSTEM, instance.id)
    return done.status.value


def test_placeholders_in_a_webhook_url_cannot_leave_their_segment(tmp_path: Path, receiver: HttpServer) -> None:
    settings = Settings(
        data_dir=tmp_path,
        admin_token="webhook-urls-token-0123456789",
        executors="notify=webhook",
        outbound_allow_private=True,  # the receiver is on loopback
    )

    async def go() -> str:
        services = await build_services(settings, clock=FakeClock())
        await bootstrap(services, load_example=False)
        try:
            return await run_hooks(services, receiver, {"path": ESCAPE, "dots": ".."})
        finally:
            await services.store.close()

    assert asyncio.run(go()) == "completed"
    assert [(hit.method, hit.path) for hit in receiver.hits] == [
        ("POST", "/people/..%2F..%2Fadmin%3Fx%3D1%23?who=Ada&note=..%2F..%2Fadmin%3Fx%3D1%23"),
        ("POST", "/notes/%2E%2E/..%2F..%2Fadmin%3Fx%3D1%23"),
    ]
    assert receiver.hits[0].body == b'{"path":"../../admin?x=1#"}'  # a body is JSON, not a URL: kept as it is
