"""Texts people send back, on every store (api.md § Campaign work `POST /api/inbound/sms`): `cbworkflow serve` with
its worker, a local Twilio-compatible provider it sends through, and requests signed as Twilio signs them.

The signature here is computed from Twilio's published algorithm on its own (not with the server's function): the
URL Twilio called (`CBW_PUBLIC_URL` and the path and query), then every form field sorted by name, HMAC-SHA1 with
the auth token, base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from conftest import PostgresDatabase, free_port, start_server, stop_server, store_url
from flows import one_text
from local_servers import HttpServer, Recorded, Reply

TOKEN = "inbound-sms-superadmin-token-0123456789"
AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_URL = "https://outreach.example.org/campaign"
RACES = 25  # per store


def sign(path_and_query: str, fields: dict[str, str], auth_token: str = AUTH_TOKEN) -> str:
    signed = PUBLIC_URL + path_and_query + "".join(k + fields[k] for k in sorted(fields))
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def provider(request: Recorded) -> Reply:
    sid = f"SM{hashlib.sha1(request.body).hexdigest()[:16]}"
    return Reply(201, {"Content-Type": "application/json"}, json.dumps({"sid": sid, "status": "queued"}).encode())


class World:
    def __init__(self, base_url: str, sms: HttpServer) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        self.sms = sms

    def ok(self, answer: httpx.Response, status: int = 200) -> Any:
        assert answer.status_code == status, answer.text
        return answer.json()

    def contact(self, **fields: Any) -> dict[str, Any]:
        found: dict[str, Any] = self.ok(self.http.post("/api/contacts", json={"name": "Pat", **fields}), 201)
        return found

    def text(
        self, sender: str, body: str, *, tenant: str = "default", signature: str | None = None, **extra: str
    ) -> httpx.Response:
        """POST what Twilio posts for a text from `sender`, signed unless `signature` is given."""
        fields = {"MessageSid": f"SM{time.time_ns()}", "From": sender, "To": "+15550100000", "Body": body}
        fields.update(extra)
        path = f"/api/inbound/sms?tenant={tenant}"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature if signature is not None else sign(path, fields),
        }
        return httpx.post(self.base_url + path, content=urlencode(fields), headers=headers, timeout=30)

    def timeline(self, contact_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ok(
            self.http.get(f"/api/contacts/{contact_id}/timeline", params={"limit": 200})
        )["items"]
        return items

    def instance(self, instance_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.ok(self.http.get(f"/api/instances/{instance_id}"))
        return found

    def sent_to(self, number: str) -> list[Recorded]:
        return [hit for hit in self.sms.hits if dict(parse_qsl(hit.body.decode())).get("To") == number]


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "json"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp(f"inbound-{request.param}")
    database = PostgresDatabase() if request.param == "postgresql" else None
    with HttpServer(provider) as sms:
        env = {
            "CBW_EXECUTORS": "sms=sms",
            "CBW_SMS_BASE_URL": sms.url("").rstrip("/"),
            "CBW_SMS_ACCOUNT_SID": "AC123",
            "CBW_SMS_AUTH_TOKEN": AUTH_TOKEN,
            "CBW_SMS_FROM": "+15550100000",
            "CBW_PUBLIC_URL": PUBLIC_URL,
            "CBW_WORKER_POLL_INTERVAL": "0.2",
        }
        port = free_port()
        url = store_url(request.param, folder, database)
        proc = start_server(
            folder, port, folder / "server.log", admin_token=TOKEN, database_url=url, worker=True, env=env
        )
        made = World(f"http://127.0.0.1:{port}", sms)
        try:
            yield made
        finally:
            made.http.close()
            stop_server(proc)
            if database is not None:
                database.drop()


def test_stop_opts_every_contact_with_the_number_out_of_sms_and_start_opts_them_back_in(world: World) -> None:
    first = world.contact(phone="+1 415 555 0101")
    second = world.contact(name="Pat's partner", phone="(415) 555-0101")  # the same number, written otherwise
    other = world.contact(phone="+14155550102")

    answer = world.text("+14155550101", "  stop ")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    assert "<Response" in answer.text

    for contact in (first, second):
        found = world.ok(world.http.get(f"/api/contacts/{contact['id']}"))
        assert list(found["opted_out"]) == ["sms"]
        [event] = [e for e in world.timeline(contact["id"]) if e["type"] == "contact_opted_out"]
        assert event["actor"] == "inbound-sms"
        assert (event["data"]["source"], event["data"]["reason"]) == ("sms", "replied STOP")
    assert world.ok(world.http.get(f"/api/contacts/{other['id']}"))["opted_out"] == {}

    assert world.text("+14155550101", "UNSTOP").status_code == 200
    for contact in (first, second):
        assert world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}
        assert next(e["type"] for e in world.timeline(contact["id"])) == "contact_opted_in"


@pytest.mark.parametrize(("line", "word"), list(enumerate(["STOPALL", "unsubscribe", "Cancel", "END", "quit"])))
def test_every_stop_word_alone_opts_out(world: World, line: int, word: str) -> None:
    number = f"+141555502{line:02d}"
    contact = world.contact(phone=number)
    assert world.text(number, word).status_code == 200
    assert list(world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"]) == ["sms"]


def test_any_other_text_is_an_sms_received_event_that_resumes_a_waiting_instance(world: World) -> None:
    template = {
        "id": "reply-wait",
        "name": "Wait for a reply",
        "start_node": "wait",
        "nodes": {
            "wait": {
                "type": "wait",
                "wait_condition": {"type": "event", "event": "sms_received", "timeout": "P7D"},
                "transitions": {"received": "done", "timeout": "done"},
            },
            "done": {"type": "end", "end_status": "replied"},
        },
    }
    world.ok(world.http.post("/api/workflows", json=template), 201)
    contact = world.contact(phone="+14155550111")
    body = {"contact_id": contact["id"], "template_id": "reply-wait", "start": True}
    made = world.ok(world.http.post("/api/instances", json=body), 201)

    assert world.text("+14155550111", "Stop by the office? Yes I can help").status_code == 200
    done = world.instance(made["id"])
    assert (done["status"], done["end_status"]) == ("completed", "replied")
    [received] = [e for e in world.timeline(contact["id"]) if e["type"] == "event_received" and not e["instance_id"]]
    assert received["data"]["event"] == "sms_received"
    assert received["data"]["data"]["body"] == "Stop by the office? Yes I can help"
    assert received["data"]["data"]["from"] == "+14155550111"
    assert world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}


def test_a_bad_signature_is_refused_and_changes_nothing(world: World) -> None:
    contact = world.contact(phone="+14155550122")
    path = "/api/inbound/sms?tenant=default"
    fields = {"From": "+14155550122", "Body": "STOP"}
    forged = [
        world.text("+14155550122", "STOP", signature=""),
        world.text("+14155550122", "STOP", signature="not-a-signature"),
        world.text("+14155550122", "STOP", signature=sign(path, fields, auth_token="another-token")),
        world.text("+14155550122", "STOP", signature=sign(path, {**fields, "Body": "hello"})),  # body changed
        world.text("+14155550122", "STOP", signature=sign("/api/inbound/sms?tenant=other", fields)),  # query changed
    ]
    for answer in forged:
        assert answer.status_code == 403, answer.text
        assert "X-Twilio-Signature" in answer.json()["detail"]
    unsigned = httpx.post(world.base_url + path, data=fields, timeout=30)
    assert unsigned.status_code == 403
    assert world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}
    assert not [e for e in world.timeline(contact["id"]) if e["type"] == "contact_opted_out"]


def test_a_signed_text_for_an_unknown_tenant_or_number_changes_nothing(world: World) -> None:
    assert world.text("+14155550133", "STOP", tenant="no-such-tenant").status_code == 404
    answer = world.text("+14155559999", "STOP")  # nobody has this number: answered, so the provider stops
    assert answer.status_code == 200
    assert "<Response" in answer.text
    assert world.text("not a number", "hello").status_code == 200


def test_a_message_is_acted_on_once_however_often_it_is_posted(world: World) -> None:
    contact = world.contact(phone="+14155550144")
    for _ in range(3):  # the provider's retries, or a replay of a captured request
        assert world.text("+14155550144", "Are you still there?", MessageSid="SMrepeated0001").status_code == 200
    received = [e for e in world.timeline(contact["id"]) if e["type"] == "event_received"]
    assert len(received) == 1


def test_start_undoes_only_an_opt_out_that_came_by_text(world: World) -> None:
    asked_staff = world.contact(name="Asked on the phone", phone="+14155550155")
    by_text = world.contact(name="Texted STOP", phone="+14155550166")
    world.ok(world.http.post(f"/api/contacts/{asked_staff['id']}/opt-out", json={"channels": ["sms"]}))
    assert world.text("+14155550166", "STOP").status_code == 200
    for number in ("+14155550155", "+14155550166"):
        assert world.text(number, "START").status_code == 200
    assert list(world.ok(world.http.get(f"/api/contacts/{asked_staff['id']}"))["opted_out"]) == ["sms"]
    assert world.ok(world.http.get(f"/api/contacts/{by_text['id']}"))["opted_out"] == {}


def test_the_provider_s_opt_out_type_is_followed(world: World) -> None:
    contact = world.contact(phone="+14155550177")
    assert world.text("+14155550177", "arrêt", OptOutType="STOP").status_code == 200  # a keyword of its own
    assert list(world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"]) == ["sms"]
    assert world.text("+14155550177", "reprendre", OptOutType="START").status_code == 200
    assert world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}


def test_malformed_or_oversized_forms_are_refused_before_anything_changes(world: World) -> None:
    contact = world.contact(phone="+14155550188")
    path = "/api/inbound/sms?tenant=default"
    pairs = [("From", "+14155550188"), ("Body", "STOP"), ("Body", "hello")]
    signed = base64.b64encode(
        hmac.new(
            AUTH_TOKEN.encode(),
            (PUBLIC_URL + path + "".join(k + v for k, v in sorted(pairs, key=lambda p: p[0]))).encode(),
            hashlib.sha1,
        ).digest()
    ).decode()
    twice = httpx.post(
        world.base_url + path,
        content=urlencode(pairs),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signed},
        timeout=30,
    )
    assert twice.status_code == 422, twice.text
    assert "Body" in twice.json()["detail"]
    huge = httpx.post(
        world.base_url + path,
        content=b"a=" + b"x" * (70 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
        timeout=30,
    )
    assert huge.status_code == 413
    assert world.ok(world.http.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}


def test_a_stop_racing_a_due_text_never_lets_a_text_out_after_the_opt_out(world: World) -> None:
    """The text step starts while STOP arrives, many times: a text goes out only when the worker's consent check
    (its `action_started`) committed before the opt-out; otherwise the step takes `opted_out` and nothing is sent."""
    template = one_text("race", opted_out=True)
    world.ok(world.http.post("/api/workflows", json=template), 201)
    outcomes = {"texted": 0, "stopped": 0}
    for trial in range(RACES):
        number = f"+1415556{trial:04d}"
        contact = world.contact(name=f"Racer {trial}", phone=number)
        body = {"contact_id": contact["id"], "template_id": "race"}
        made = world.ok(world.http.post("/api/instances", json=body), 201)
        barrier = threading.Barrier(2)
        answers: dict[str, int] = {}
        # From STOP 30 ms ahead to the start 30 ms ahead, so that trials land on every side of the worker's check
        lead = (trial % 13 - 6) * 0.005

        def start(
            instance_id: str = made["id"],
            delay: float = max(lead, 0.0),
            barrier: threading.Barrier = barrier,
            answers: dict[str, int] = answers,
        ) -> None:
            barrier.wait()
            time.sleep(delay)
            answers["start"] = world.http.post(f"/api/instances/{instance_id}/start", json={}).status_code

        def stop(
            sender: str = number,
            delay: float = max(-lead, 0.0),
            barrier: threading.Barrier = barrier,
            answers: dict[str, int] = answers,
        ) -> None:
            barrier.wait()
            time.sleep(delay)
            answers["stop"] = world.text(sender, "STOP").status_code

        threads = [threading.Thread(target=start), threading.Thread(target=stop)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == {"start": 200, "stop": 200}
        deadline = time.monotonic() + 30
        while (found := world.instance(made["id"]))["status"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
        assert found["status"] == "completed", found
        events = world.timeline(contact["id"])
        opted = [e["sequence"] for e in events if e["type"] == "contact_opted_out"]
        sending = [e["sequence"] for e in events if e["type"] == "action_started"]
        assert len(opted) == 1
        sent = world.sent_to(number)
        if found["end_status"] == "texted":
            assert len(sent) == 1
            assert len(sending) == 1
            assert sending[0] < opted[0], "the text went out although the opt-out committed first"
        else:
            assert found["end_status"] == "stopped"
            assert sent == [], "a text was sent to a contact who had opted out"
            assert sending == []
        outcomes[found["end_status"]] += 1
    print(f"races: {outcomes}")  # both orders happen; which ones is up to the scheduler
    assert sum(outcomes.values()) == RACES
