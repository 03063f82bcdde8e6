"""The engine end to end over HTTP, in real time: `cbworkflow serve` with its embedded worker, on every store.

The outside world is local and real: a fake Anthropic Messages API (the official SDK talks to it through
`CBW_AI_BASE_URL`), a fake Twilio-compatible SMS API, and a webhook receiver. The reference template runs with its
three-day wait shortened to two seconds; the model's answer is chosen by markers in the canvasser's notes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PostgresDatabase, free_port, reference_template, start_server, stop_server, store_url
from fake_anthropic import FakeAnthropic
from local_servers import HttpServer, Recorded, Reply

TOKEN = "engine-http-superadmin-token-0123456789"
FAST = "county-fast"


def sms_reply(request: Recorded) -> Reply:
    form = dict(pair.split("=", 1) for pair in request.body.decode().split("&"))
    if form.get("To", "").endswith("5550199"):  # a number the provider refuses
        return Reply(
            400, {"Content-Type": "application/json"}, json.dumps({"code": 21211, "message": "bad To"}).encode()
        )
    body = {"sid": f"SM{len(form)}", "status": "queued"}
    return Reply(201, {"Content-Type": "application/json"}, json.dumps(body).encode())


def hook_reply(request: Recorded) -> Reply:
    body = json.loads(request.body or b"{}")
    outcome = {"outcome": "escalate"} if body.get("score") == "9" else {"ok": True}
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(outcome).encode())


class World:
    def __init__(self, base_url: str, sms: HttpServer, hook: HttpServer, model: FakeAnthropic, pid: int) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        self.sms = sms
        self.hook = hook
        self.model = model
        self.pid = pid

    def post(self, path: str, body: Any = None, ok: int = 200) -> dict[str, Any]:
        answer = self.http.post(path, json=body)
        assert answer.status_code == ok, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def enrol(self, template: str = FAST, **contact: Any) -> str:
        made = self.post("/api/contacts", {"name": "Pat", **contact}, ok=201)
        body = {"contact_id": made["id"], "template_id": template, "start": True}
        return str(self.post("/api/instances", body, ok=201)["id"])

    def instance(self, instance_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/instances/{instance_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def wait_until(
        self, instance_id: str, check: Callable[[dict[str, Any]], bool], seconds: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            found = self.instance(instance_id)
            if check(found):
                return found
            assert time.monotonic() < deadline, json.dumps(found, indent=1)[:4000]
            time.sleep(0.1)

    @staticmethod
    def types(instance: dict[str, Any]) -> list[str]:
        return [e["type"] for e in instance["timeline"]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "json"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp(f"engine-{request.param}")
    database = PostgresDatabase() if request.param == "postgresql" else None
    with FakeAnthropic() as model, HttpServer(sms_reply) as sms, HttpServer(hook_reply) as hook:
        env = {
            "ANTHROPIC_API_KEY": "sk-test-key",
            "CBW_AI_BASE_URL": model.base_url,
            "CBW_AI_TIMEOUT_S": "4",
            "CBW_EXECUTORS": "sms=sms",
            "CBW_SMS_BASE_URL": sms.url("").rstrip("/"),
            "CBW_SMS_ACCOUNT_SID": "AC123",
            "CBW_SMS_AUTH_TOKEN": "sms-secret",
            "CBW_SMS_FROM": "+15550100000",
            "CBW_OUTBOUND_ALLOW_PRIVATE": "true",
            "CBW_WORKER_POLL_INTERVAL": "0.2",
        }
        port = free_port()
        url = store_url(request.param, folder, database)
        proc = start_server(
            folder, port, folder / "server.log", admin_token=TOKEN, database_url=url, worker=True, env=env
        )
        made = World(f"http://127.0.0.1:{port}", sms, hook, model, proc.pid)
        fast = reference_template()
        fast["id"] = FAST
        fast["nodes"]["schedule_followup"]["wait_condition"]["duration"] = "PT2S"
        made.post("/api/workflows", fast, ok=201)
        try:
            yield made
        finally:
            made.http.close()
            stop_server(proc)
            if database is not None:
                database.drop()


def test_interested_waits_then_the_worker_texts_them(world: World) -> None:
    instance = world.enrol(name="Ada", phone="(555) 201-3344")
    moved = world.post(f"/api/instances/{instance}/transition", {"outcome": "answered_interested"})
    assert (moved["status"], moved["waiting_for"]) == ("waiting", "timer")
    done = world.wait_until(instance, lambda i: i["status"] == "completed", seconds=30)
    assert done["end_status"] == "success"
    kinds = World.types(done)
    assert kinds.index("wait_started") < kinds.index("wait_completed") < kinds.index("action_completed")
    sent = [r for r in world.sms.hits if "Ada" in r.body.decode()]
    assert len(sent) == 1
    assert sent[0].path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert "To=%2B15552013344" in sent[0].body.decode()


def test_the_model_reads_the_door_notes_and_chooses_the_text(world: World) -> None:
    instance = world.enrol(name="Grace", phone="555-201-4455")
    world.post(f"/api/instances/{instance}/transition", {"outcome": "no_answer"})
    notes = "[fake:outcome=text][fake:reason=asked for texts] please text me"
    world.post(
        f"/api/instances/{instance}/transition",
        {"outcome": "contacted_interested", "state_updates": {"door_notes": notes}},
    )
    done = world.wait_until(instance, lambda i: i["status"] == "completed")
    assert done["end_status"] == "success"
    decision = next(e for e in done["timeline"] if e["type"] == "decision_evaluated")
    assert decision["actor"] == "ai"
    data = decision["data"]
    assert (data["outcome"], data["reason"], data["attempts"]) == ("text", "asked for texts", 1)
    assert data["input_tokens"] > 0
    assert data["latency_ms"] >= 0
    asked = next(r for r in world.model.requests if "please text me" in r.prompt)
    assert asked.outcomes == ["mail", "text"] or sorted(asked.outcomes) == ["mail", "text"]
    assert "Grace" in asked.prompt


def test_a_failing_model_takes_the_fallback_and_a_volunteer_mails(world: World) -> None:
    instance = world.enrol(name="Alan")
    world.post(f"/api/instances/{instance}/transition", {"outcome": "voicemail"})
    world.post(
        f"/api/instances/{instance}/transition",
        {"outcome": "contacted_interested", "state_updates": {"door_notes": "[fake:500] grumpy"}},
    )
    at_mail = world.wait_until(instance, lambda i: i["current_node"] == "send_postcard")
    decision = next(e for e in at_mail["timeline"] if e["type"] == "decision_evaluated")
    assert decision["data"]["fallback"] is True
    assert "500" in decision["data"]["error"]
    token = world.post("/api/tokens", {"role": "volunteer"}, ok=201)["token"]
    with httpx.Client(base_url=str(world.http.base_url), headers={"Authorization": f"Bearer {token}"}) as volunteer:
        claimed = volunteer.post("/api/tasks/claim", json={"action": "mail"})
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["instance_id"] == instance
        done = volunteer.post(f"/api/instances/{instance}/transition", json={"outcome": "sent"})
        assert done.status_code == 200, done.text
    assert done.json()["end_status"] == "success"


def text_failed_over_to_the_postcard(world: World, **contact: Any) -> dict[str, Any]:
    """Enrol, answer interested: after the wait the text fails and the postcard follows. The text's event."""
    instance = world.enrol(**contact)
    world.post(f"/api/instances/{instance}/transition", {"outcome": "answered_interested"})
    at_mail = world.wait_until(instance, lambda i: i["current_node"] == "send_postcard", seconds=30)
    completed: dict[str, Any] = next(e for e in at_mail["timeline"] if e["type"] == "action_completed")
    assert completed["data"]["outcome"] == "failed"
    return completed


def test_a_refused_text_fails_over_to_the_postcard(world: World) -> None:
    text_failed_over_to_the_postcard(world, name="Bo", phone="555-555-0199")


def test_a_phone_that_does_not_parse_is_never_texted(world: World) -> None:
    completed = text_failed_over_to_the_postcard(world, name="Maybe Jones", phone="call me maybe")
    assert "could not be read as a phone number" in completed["data"]["error"]
    assert not [r for r in world.sms.hits if b"Maybe" in r.body or b"call" in r.body]


CONFIRM = {
    "id": "confirm",
    "name": "Confirm",
    "start_node": "read",
    "nodes": {
        "read": {
            "type": "decision",
            "rule": {
                "type": "ai",
                "prompt": "[fake:outcome=yes][fake:reason=sounds keen] {state.notes}",
                "confirm": True,
                "fallback": "no",
            },
            "transitions": {"yes": "won", "no": "lost"},
        },
        "won": {"type": "end", "end_status": "won"},
        "lost": {"type": "end", "end_status": "lost"},
    },
}


def test_confirm_mode_shows_the_suggestion_and_a_person_decides(world: World) -> None:
    world.post("/api/workflows", CONFIRM, ok=201) if world.http.get(
        "/api/workflows/confirm"
    ).status_code == 404 else None
    instance = world.enrol("confirm")
    waiting = world.wait_until(instance, lambda i: i["waiting_for"] == "ai_confirm")
    assert waiting["suggestion"] == {"outcome": "yes", "reason": "sounds keen"}
    task = next(t for t in world.http.get("/api/tasks").json()["items"] if t["instance_id"] == instance)
    assert task["suggestion"] == {"outcome": "yes", "reason": "sounds keen"}
    done = world.post(f"/api/instances/{instance}/transition", {"outcome": "no"})
    assert done["end_status"] == "lost"
    manual = next(e for e in world.instance(instance)["timeline"] if e["type"] == "decision_manual_input")
    assert manual["data"]["suggestion"]["outcome"] == "yes"


HOOKED = {
    "id": "hooked",
    "name": "Hooked",
    "start_node": "hook",
    "nodes": {
        "hook": {
            "type": "webhook",
            "webhook_url": "HOOK",
            "webhook_body": {"who": "{contact.name}", "score": "{state.score}"},
            "transitions": {"success": "fine", "failure": "lost", "escalate": "hot"},
        },
        "fine": {"type": "end", "end_status": "fine"},
        "hot": {"type": "end", "end_status": "hot"},
        "lost": {"type": "end", "end_status": "lost"},
    },
}


def test_webhook_nodes_call_out_and_take_the_answers_outcome(world: World) -> None:
    if world.http.get("/api/workflows/hooked").status_code == 404:
        body = json.loads(json.dumps(HOOKED).replace("HOOK", world.hook.url("/crm")))
        world.post("/api/workflows", body, ok=201)
    made = world.post("/api/contacts", {"name": "Cy"}, ok=201)
    plain = world.post("/api/instances", {"contact_id": made["id"], "template_id": "hooked", "start": True}, ok=201)
    hot = world.post(
        "/api/instances",
        {"contact_id": made["id"], "template_id": "hooked", "start": True, "initial_state": {"score": 9}},
        ok=201,
    )
    assert world.wait_until(plain["id"], lambda i: i["status"] == "completed")["end_status"] == "fine"
    assert world.wait_until(hot["id"], lambda i: i["status"] == "completed")["end_status"] == "hot"
    calls = [r for r in world.hook.hits if r.path == "/crm"]
    assert {json.loads(r.body)["score"] for r in calls} >= {"", "9"}
    assert all(r.headers.get("idempotency-key") for r in calls)


def test_pause_holds_a_due_wait_and_resume_fires_it(world: World) -> None:
    instance = world.enrol(name="Di", phone="555-201-7788")
    world.post(f"/api/instances/{instance}/transition", {"outcome": "answered_interested"})
    world.post(f"/api/instances/{instance}/pause")
    time.sleep(3)  # the two-second wait falls due while paused
    assert world.instance(instance)["status"] == "paused"
    world.post(f"/api/instances/{instance}/resume")
    assert world.wait_until(instance, lambda i: i["status"] == "completed")["end_status"] == "success"


# ---------------------------------------------------------------------------------------------- hostile rules
HOSTILE = [
    "'a'*10**10",
    "9**9**9",
    "3999999**3999999",
    "1<<10**6",
    "'a'.ljust(3*10**8)",
    "'1'.zfill(10**9)",
    "('a'*90000).replace('a','a'*90000)",
    "[[0]*10000]*10000",
    "[x for x in [0]*10**9]",  # range() is not a helper: validation refuses it before any instance runs
    "int('-'*50000+'1')",
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_rules_fail_their_instance_and_leave_the_server_as_it_was(world: World) -> None:
    before = rss_kb(world.pid)
    answered: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=str(world.http.base_url), timeout=10) as http:
            while not stop.is_set():
                answered.append(http.get("/healthz").status_code)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for n, expression in enumerate(HOSTILE):
            template = {
                "id": f"hostile-{n}",
                "name": "Hostile",
                "start_node": "d",
                "nodes": {
                    "d": {
                        "type": "decision",
                        "rule": {"type": "heuristic", "expression": expression},
                        "transitions": {"true": "e", "false": "e"},
                    },
                    "e": {"type": "end"},
                },
            }
            if world.http.get(f"/api/workflows/hostile-{n}").status_code == 404:
                world.post("/api/workflows", template, ok=201)
            instance = world.enrol(f"hostile-{n}")
            failed = world.instance(instance)
            assert failed["status"] == "failed", (expression, failed["status"])
            error = next(e for e in failed["timeline"] if e["type"] == "action_failed")
            assert "expression" in error["data"]["error"], error
    finally:
        stop.set()
        prober.join()
    assert answered  # other requests were answered all along
    assert set(answered) == {200}
    assert rss_kb(world.pid) - before < 50_000  # memory stayed flat (under 50 MB of growth)
