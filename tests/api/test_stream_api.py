"""`GET /api/stream` over a real server on every store: live events, resuming with `Last-Event-ID`, filters,
tenancy, a volunteer's view, and bad input."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import httpx
import pytest

from conftest import Tenant


class Listener:
    """Reads a stream in a thread; `take(n)` gives the next n events (as dicts, with `_id` the SSE id)."""

    def __init__(self, tenant: Tenant, token: str, params: dict[str, Any] | None = None, **headers: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        self.client = httpx.Client(
            base_url=tenant.server.base_url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=None
        )
        self.thread = threading.Thread(target=self._read, args=(params or {},), daemon=True)
        self.thread.start()
        assert self.status.get(timeout=30) == 200

    def _read(self, params: dict[str, Any]) -> None:
        try:
            with self.client.stream("GET", "/api/stream", params=params) as answer:
                self.status.put(answer.status_code)
                sse_id = None
                for line in answer.iter_lines():
                    if line.startswith("id:"):
                        sse_id = line[3:].strip()
                    elif line.startswith("data:"):
                        self.events.put({**json.loads(line[5:].strip()), "_id": sse_id})
        except httpx.HTTPError:
            return  # closed by the test

    def take(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found = []
        while len(found) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"waited {timeout} s for {n} events, got {len(found)}: {found}")
            try:
                found.append(self.events.get(timeout=left))
            except queue.Empty:
                continue
        return found

    def nothing_more(self, wait: float = 1.0) -> None:
        time.sleep(wait)
        assert self.events.empty(), self.events.get()

    def close(self) -> None:
        self.client.close()


def _note(tenant: Tenant, instance_id: str, text: str) -> None:
    answer = tenant.admin.post(f"/api/instances/{instance_id}/notes", json={"text": text})
    assert answer.status_code == 200, answer.text


def test_events_arrive_live_with_their_sequence_as_id(tenant: Tenant) -> None:
    inst = tenant.instance()
    listener = Listener(tenant, tenant.admin_token)
    try:
        _note(tenant, inst["id"], "first")
        _note(tenant, inst["id"], "second")
        got = listener.take(2)
        assert [e["type"] for e in got] == ["user_note", "user_note"]
        assert "first" in json.dumps(got[0])  # in commit order
        assert "second" in json.dumps(got[1])
        assert [e["instance_id"] for e in got] == [inst["id"], inst["id"]]
        first, second = (int(e["_id"]) for e in got)
        assert second == first + 1
        assert [e["sequence"] for e in got] == [first, second]
        timeline = tenant.admin.get(f"/api/instances/{inst['id']}/timeline").json()["items"]
        assert [e["sequence"] for e in timeline][-2:] == [first, second]  # the same numbers as the timeline
    finally:
        listener.close()


def test_reconnecting_with_last_event_id_misses_nothing(tenant: Tenant) -> None:
    inst = tenant.instance()
    listener = Listener(tenant, tenant.admin_token)
    try:
        _note(tenant, inst["id"], "seen")
        seen = listener.take(1)[0]
    finally:
        listener.close()
    for n in range(5):  # while nobody listens
        _note(tenant, inst["id"], f"missed {n}")
    again = Listener(tenant, tenant.admin_token, **{"Last-Event-ID": seen["_id"]})
    try:
        missed = again.take(5)
        assert [int(e["_id"]) for e in missed] == list(range(int(seen["_id"]) + 1, int(seen["_id"]) + 6))
        _note(tenant, inst["id"], "live again")
        assert again.take(1)[0]["type"] == "user_note"
    finally:
        again.close()
    by_query = Listener(tenant, tenant.admin_token, {"after": seen["_id"], "type": "user_note"})
    try:
        assert len(by_query.take(6)) == 6  # ?after= for clients that cannot set the header
    finally:
        by_query.close()


def test_filters_pick_instance_contact_and_type(tenant: Tenant) -> None:
    one, other = tenant.instance(), tenant.instance()
    by_instance = Listener(tenant, tenant.admin_token, {"instance_id": one["id"]})
    by_contact = Listener(tenant, tenant.admin_token, {"contact_id": other["contact_id"]})
    by_type = Listener(tenant, tenant.admin_token, {"type": "tag_added,instance_paused"})
    try:
        _note(tenant, other["id"], "not for by_instance")
        _note(tenant, one["id"], "for by_instance")
        assert tenant.admin.post(f"/api/instances/{one['id']}/tags/hot").status_code == 200
        got = by_instance.take(2)
        assert [e["type"] for e in got] == ["user_note", "tag_added"]
        assert {e["instance_id"] for e in got} == {one["id"]}
        assert [e["instance_id"] for e in by_contact.take(1)] == [other["id"]]
        assert [e["type"] for e in by_type.take(1)] == ["tag_added"]
        by_contact.nothing_more(0.5)
        by_type.nothing_more(0.5)
    finally:
        for listener in (by_instance, by_contact, by_type):
            listener.close()


def test_another_tenants_events_never_appear(make_tenant: Any) -> None:
    mine, theirs = make_tenant(), make_tenant()
    their_instance = theirs.instance()
    listener = Listener(mine, mine.admin_token)
    try:
        _note(theirs, their_instance["id"], "private")
        own = mine.instance()
        got = listener.take(2)  # the contact's creation, then its instance's first event
        assert [e["contact_id"] for e in got] == [own["contact_id"]] * 2  # mine arrive; theirs, committed first, not
        assert got[1]["instance_id"] == own["id"]
        listener.nothing_more(0.5)
    finally:
        listener.close()
    answer = mine.admin.get("/api/stream", params={"instance_id": their_instance["id"]})
    assert answer.status_code == 404, answer.text  # another tenant's instance does not exist here
    answer = mine.admin.get("/api/stream", params={"contact_id": their_instance["contact_id"]})
    assert answer.status_code == 404, answer.text


def test_a_volunteer_sees_only_the_instances_it_holds(tenant: Tenant) -> None:
    volunteer = tenant.token("volunteer")
    first, second = tenant.instance(start=True), tenant.instance(start=True)
    worker = tenant.client(volunteer["token"])
    listener = Listener(tenant, volunteer["token"])
    try:
        claimed = worker.post("/api/tasks/claim", json={})
        assert claimed.status_code == 200, claimed.text
        held_id = claimed.json()["instance_id"]
        other_id = second["id"] if held_id == first["id"] else first["id"]
        _note(tenant, other_id, "not theirs")
        _note(tenant, held_id, "theirs")
        got = listener.take(1)
        assert got[0]["instance_id"] == held_id
        listener.nothing_more(0.5)
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("params", "headers", "word"),
    [
        ({"type": "no_such_type"}, {}, "not an event type"),
        ({}, {"Last-Event-ID": "abc"}, "not an event sequence"),
        ({"after": "-1"}, {}, "not an event sequence"),
    ],
)
def test_bad_input_is_a_422_that_says_why(
    tenant: Tenant, params: dict[str, str], headers: dict[str, str], word: str
) -> None:
    answer = tenant.admin.get("/api/stream", params=params, headers=headers)
    assert answer.status_code == 422, answer.text
    assert word in answer.json()["detail"]


def test_a_stream_needs_a_token(tenant: Tenant) -> None:
    assert httpx.get(f"{tenant.server.base_url}/api/stream", timeout=10).status_code == 401
