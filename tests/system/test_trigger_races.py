"""Triggers raised at once from two server processes on one store (each of the three): one instance per contact.

Twenty tags, each a trigger of the same template, are added to one contact at once, half through each process;
then twenty copies of a custom event with an `event` trigger. The store's enrolment key (not a check before the
insert) is what keeps it to one instance.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from test_concurrency import all_items, get_ok, second_server, statuses, together

from conftest import Tenant

__all__ = ["second_server"]  # the fixture, shared with the other concurrency tests

TAGS = [f"t{i:02d}" for i in range(20)]


def template(triggers: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": "raced",
        "name": "Raced",
        "start_node": "wait",
        "nodes": {
            "wait": {
                "type": "wait",
                "wait_condition": {"type": "duration", "duration": "P1D"},
                "transitions": {"elapsed": "end"},
            },
            "end": {"type": "end"},
        },
        "triggers": triggers,
    }


def adding(path: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post(path)


def posting(body: dict[str, object]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post("/api/events", json=body)


@pytest.mark.slow
def test_twenty_tags_at_once_over_two_processes_enrol_once(tenant: Tenant, second_server: str) -> None:
    tenant.template(template([{"on": "tag_added", "tag": tag} for tag in TAGS]))
    contact = tenant.contact(name="Raced")
    requests = [adding(f"/api/contacts/{contact['id']}/tags/{tag}") for tag in TAGS]
    results = together([tenant.server.base_url, second_server], tenant.admin_token, requests)
    assert statuses(results) == [200] * 20, results
    assert sorted(get_ok(tenant.admin, f"/api/contacts/{contact['id']}")["tags"]) == TAGS
    made = all_items(tenant.admin, f"/api/instances?template_id=raced&contact_id={contact['id']}")
    assert len(made) == 1, made


@pytest.mark.slow
def test_twenty_events_at_once_over_two_processes_enrol_once(tenant: Tenant, second_server: str) -> None:
    tenant.template(template([{"on": "event", "event": "signup"}]))
    contact = tenant.contact(name="Signed Up")
    body = {"name": "signup", "contact_id": contact["id"]}
    results = together([tenant.server.base_url, second_server], tenant.admin_token, [posting(body)] * 20)
    assert statuses(results) == [200] * 20, results
    started = [id_ for status, text in results for id_ in httpx.Response(status, text=text).json()["started"]]
    made = all_items(tenant.admin, f"/api/instances?template_id=raced&contact_id={contact['id']}")
    assert len(made) == 1, made
    assert started == [made[0]["id"]]
