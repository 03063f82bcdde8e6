"""Executors against real local servers: the webhook executor and webhook nodes (HTTP), email (an aiosmtpd SMTP
server), SMS (a fake Twilio-compatible HTTP API), and the CBW_EXECUTORS registry. Backoff sleeps are injected."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from cbworkflow.executors import (
    ActionRequest,
    ActionResult,
    EmailExecutor,
    SmsExecutor,
    WebhookCall,
    WebhookExecutor,
    build_executors,
    call_webhook_node,
    parse_executors,
)
from cbworkflow.executors.email import SmtpConfig
from cbworkflow.executors.sms import SmsConfig
from cbworkflow.settings import Settings
from local_servers import HttpServer, Recorded, Reply, SmtpServer, free_port, json_reply, sequence

CONTACT = {"id": "c1", "name": "Ada Lovelace", "email": "ada@example.org", "phone": "(555) 201-3344",
           "phone_e164": "+15552013344"}  # fmt: skip


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def request(
    action: str,
    config: dict[str, Any],
    *,
    contact: dict[str, Any] | None = None,
    outcomes: tuple[str, ...] = ("sent", "failed"),
) -> ActionRequest:
    return ActionRequest(
        action=action,
        config=config,
        contact=CONTACT if contact is None else contact,
        instance_id="inst1",
        node_id="node1",
        idempotency_key="inst1-node1-4",
        outcomes=list(outcomes),
    )


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as running:
        yield running


# ---------------------------------------------------------------------------------------------------- webhook


def test_webhook_executor_sends_and_answers_sent(server: HttpServer) -> None:
    executor = WebhookExecutor(allow_private=True, sleep=Sleeps())
    config = {
        "url": server.url("/hook?token=abc"),
        "headers": {"X-Key": "hdr-secret-value"},
        "body": {"contact": "Ada"},
    }
    result = asyncio.run(executor.run(request("webhook", config)))
    assert (result.outcome, result.ok, result.error) == ("sent", True, None)
    assert result.data["status_code"] == 200
    assert result.data["method"] == "POST"
    assert result.data["url"] == f"http://127.0.0.1:{server.port}/…"  # no path or query: they may hold a secret
    assert len(result.data["attempts"]) == 1
    [hit] = server.hits
    assert (hit.method, hit.body) == ("POST", b'{"contact":"Ada"}')
    assert hit.headers["x-key"] == "hdr-secret-value"
    assert hit.headers["idempotency-key"] == "inst1-node1-4"
    assert hit.headers["content-type"] == "application/json"
    assert "hdr-secret-value" not in str(result.details())
    assert "token=abc" not in str(result.details())


def test_webhook_executor_takes_the_outcome_from_the_response(server: HttpServer) -> None:
    executor = WebhookExecutor(allow_private=True, sleep=Sleeps())
    server.respond = lambda r: json_reply(200, '{"outcome": "declined"}')
    result = asyncio.run(
        executor.run(request("webhook", {"url": server.url()}, outcomes=("sent", "failed", "declined")))
    )
    assert (result.outcome, result.data["response_outcome"]) == ("declined", "declined")
    # an outcome the node does not have is ignored: a plain success
    server.respond = lambda r: json_reply(200, '{"outcome": "unheard_of"}')
    assert asyncio.run(executor.run(request("webhook", {"url": server.url()}))).outcome == "sent"
    # and only a 2xx answer may choose
    server.respond = lambda r: json_reply(400, '{"outcome": "sent"}')
    assert asyncio.run(executor.run(request("webhook", {"url": server.url()}))).outcome == "failed"


def test_webhook_executor_fails_after_its_attempts(server: HttpServer) -> None:
    sleeps = Sleeps()
    server.respond = lambda r: Reply(503)
    executor = WebhookExecutor(allow_private=True, sleep=sleeps)
    result = asyncio.run(executor.run(request("webhook", {"url": server.url(), "max_attempts": 3})))
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error == "HTTP 503 after 3 attempts"
    assert [a["status_code"] for a in result.data["attempts"]] == [503, 503, 503]
    assert len(sleeps.delays) == 2
    assert len(server.hits) == 3


def test_webhook_executor_recovers_after_a_transient_failure(server: HttpServer) -> None:
    server.respond = sequence(Reply(500), Reply(204))
    executor = WebhookExecutor(allow_private=True, sleep=Sleeps())
    result = asyncio.run(executor.run(request("webhook", {"url": server.url()})))
    assert result.outcome == "sent"
    assert [a["status_code"] for a in result.data["attempts"]] == [500, 204]


def test_without_a_failed_transition_the_outcome_is_none(server: HttpServer) -> None:
    """workflows.md: once attempts are exhausted, `failed` if the node has it, else the instance fails."""
    server.respond = lambda r: Reply(404)
    executor = WebhookExecutor(allow_private=True, sleep=Sleeps())
    result = asyncio.run(executor.run(request("webhook", {"url": server.url()}, outcomes=("sent",))))
    assert (result.outcome, result.ok) == (None, False)
    assert result.error == "HTTP 404 after 1 attempt"
    # likewise a success on a node without `sent`
    server.respond = lambda r: Reply(200)
    result = asyncio.run(executor.run(request("webhook", {"url": server.url()}, outcomes=("done",))))
    assert (result.outcome, result.ok) == (None, True)
    assert result.error is not None
    assert "'sent'" in result.error


def test_webhook_executor_refuses_internal_addresses_unless_allowed(server: HttpServer) -> None:
    executor = WebhookExecutor(allow_private=False, sleep=Sleeps())
    result = asyncio.run(executor.run(request("webhook", {"url": server.url()})))
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error is not None
    assert "loopback" in result.error
    assert len(result.data["attempts"]) == 1
    assert server.hits == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "url is required"),
        ({"url": 5}, "url is required"),
        ({"url": "http://x.example/", "method": "TRACE"}, "method must be one of"),
        ({"url": "http://x.example/", "headers": {"a": 1}}, "headers must be an object of strings"),
        ({"url": "http://x.example/", "timeout_s": "soon"}, "timeout_s must be a number"),
        ({"url": "http://x.example/", "timeout_s": 0}, "timeout_s must be at least"),
        ({"url": "http://x.example/", "max_attempts": 0}, "max_attempts must be at least 1"),
        ({"url": "http://x.example/", "body": {"x": float("nan")}}, "webhook configuration"),
    ],
)
def test_webhook_executor_bad_config_fails_at_once(config: dict[str, Any], message: str) -> None:
    sleeps = Sleeps()
    result = asyncio.run(WebhookExecutor(allow_private=True, sleep=sleeps).run(request("webhook", config)))
    assert result.outcome == "failed"
    assert result.error is not None
    assert message in result.error
    assert sleeps.delays == []


def test_webhook_executor_get_without_body(server: HttpServer) -> None:
    executor = WebhookExecutor(allow_private=True, sleep=Sleeps())
    result = asyncio.run(executor.run(request("webhook", {"url": server.url("/ping"), "method": "get"})))
    assert result.outcome == "sent"
    assert (server.hits[0].method, server.hits[0].body) == ("GET", b"")
    assert "content-type" not in server.hits[0].headers


def test_webhook_node_success_failure_and_response_outcome(server: HttpServer) -> None:
    outcomes = ["success", "failure", "escalate"]

    def node(**overrides: Any) -> ActionResult:
        fields: dict[str, Any] = {
            "url": server.url("/n"),
            "method": "POST",
            "headers": {},
            "body": {"a": 1},
            "timeout_s": 5,
            "max_attempts": 2,
            "idempotency_key": "i-n-1",
            "outcomes": outcomes,
        } | overrides
        return asyncio.run(call_webhook_node(WebhookCall(**fields), allow_private=True, sleep=Sleeps()))

    assert node().outcome == "success"
    server.respond = lambda r: json_reply(201, '{"outcome": "escalate"}')
    assert node().outcome == "escalate"
    server.respond = lambda r: Reply(500)
    failed = node()
    assert (failed.outcome, failed.ok, len(failed.data["attempts"])) == ("failure", False, 2)
    assert node(outcomes=["success"]).outcome is None
    server.respond = lambda r: Reply(302, {"Location": "http://elsewhere.example/"})
    redirected = node()
    assert redirected.outcome == "failure"
    assert redirected.error is not None
    assert "redirect not followed (http://elsewhere.example/)" in redirected.error
    call = WebhookCall(url=server.url(), method="POST", headers={}, body=None, timeout_s=5, max_attempts=1,
                       idempotency_key="k", outcomes=outcomes)  # fmt: skip
    assert asyncio.run(call_webhook_node(call, allow_private=False)).outcome == "failure"  # the guard refuses loopback


def test_action_result_details_for_the_timeline() -> None:
    result = ActionResult(outcome=None, ok=False, data={"status_code": 500}, error="HTTP 500 after 5 attempts")
    assert result.details() == {"status_code": 500, "ok": False, "error": "HTTP 500 after 5 attempts"}


# ---------------------------------------------------------------------------------------------------- email


def smtp_config(port: int, **overrides: Any) -> SmtpConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": "Campaign <team@campaign.example>"}
    return SmtpConfig(**(values | overrides))


def send_email(
    port: int, config: dict[str, Any], sleeps: Sleeps, contact: dict[str, Any] | None = None
) -> ActionResult:
    executor = EmailExecutor(smtp_config(port), sleep=sleeps)
    return asyncio.run(executor.run(request("email", config, contact=contact)))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as running:
        yield running


def test_email_is_delivered_with_subject_body_and_idempotency_headers(smtp: SmtpServer) -> None:
    executor = EmailExecutor(smtp_config(smtp.port), sleep=Sleeps())
    config = {"subject": "Hello Ada,\r\nBcc: everyone@example.org", "body": "See you at the town hall.\nThanks!"}
    result = asyncio.run(executor.run(request("email", config)))
    assert (result.outcome, result.ok, result.error) == ("sent", True, None)
    [received] = smtp.received
    assert received.rcpt_tos == ["ada@example.org"]
    assert received.mail_from == "team@campaign.example"
    message = received.message
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Hello Ada, Bcc: everyone@example.org"  # one line: no header injection
    assert message["Bcc"] is None
    assert message["X-Idempotency-Key"] == "inst1-node1-4"
    assert message["Message-ID"].endswith(".cbworkflow@campaign.example>")
    assert message["Message-ID"].strip() == result.data["message_id"]
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode().replace("\r\n", "\n") == "See you at the town hall.\nThanks!\n"


def test_the_same_idempotency_key_gives_the_same_message_id(smtp: SmtpServer) -> None:
    executor = EmailExecutor(smtp_config(smtp.port), sleep=Sleeps())
    for _ in range(2):
        asyncio.run(executor.run(request("email", {"subject": "s", "body": "b"})))
    assert smtp.received[0].message["Message-ID"] == smtp.received[1].message["Message-ID"]


def test_email_logs_in_when_credentials_are_set() -> None:
    with SmtpServer(login=("mailer", "pw-123")) as smtp:
        ok = EmailExecutor(smtp_config(smtp.port, user="mailer", password="pw-123"), sleep=Sleeps())
        assert asyncio.run(ok.run(request("email", {"subject": "s", "body": "b"}))).outcome == "sent"
        assert smtp.logins == ["mailer"]
        sleeps = Sleeps()
        bad = EmailExecutor(smtp_config(smtp.port, user="mailer", password="wrong"), sleep=sleeps)
        result = asyncio.run(bad.run(request("email", {"subject": "s", "body": "b"})))
        assert result.outcome == "failed"
        assert result.error is not None
        assert "535" in result.error  # authentication refused: permanent
        assert "wrong" not in str(result.details())
        assert sleeps.delays == []
        assert len(smtp.received) == 1
    assert "pw-123" not in repr(smtp_config(1, password="pw-123"))


def test_a_4xx_reply_is_retried(smtp: SmtpServer) -> None:
    smtp.data_replies = ["451 4.3.0 try again later"]
    sleeps = Sleeps()
    result = asyncio.run(
        EmailExecutor(smtp_config(smtp.port), sleep=sleeps).run(request("email", {"subject": "s", "body": "b"}))
    )
    assert result.outcome == "sent"
    assert [a["error"] is None for a in result.data["attempts"]] == [False, True]
    assert "451" in result.data["attempts"][0]["error"]
    assert len(sleeps.delays) == 1
    assert len(smtp.received) == 1


def test_a_5xx_reply_is_final(smtp: SmtpServer) -> None:
    smtp.data_replies = ["554 5.7.1 rejected as spam"]
    sleeps = Sleeps()
    result = asyncio.run(
        EmailExecutor(smtp_config(smtp.port), sleep=sleeps).run(request("email", {"subject": "s", "body": "b"}))
    )
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error is not None
    assert "554" in result.error
    assert sleeps.delays == []
    assert smtp.sessions == 1


def test_an_unreachable_server_is_retried_then_failed() -> None:
    sleeps = Sleeps()
    executor = EmailExecutor(smtp_config(free_port()), sleep=sleeps)
    result = asyncio.run(executor.run(request("email", {"subject": "s", "body": "b", "max_attempts": 3})))
    assert (result.outcome, result.ok) == ("failed", False)
    assert len(result.data["attempts"]) == 3
    assert len(sleeps.delays) == 2
    assert result.error is not None
    assert "after 3 attempts" in result.error
    # without a `failed` transition the instance fails instead
    result = asyncio.run(
        executor.run(request("email", {"subject": "s", "body": "b", "max_attempts": 1}, outcomes=("sent",)))
    )
    assert result.outcome is None


@pytest.mark.parametrize(
    ("contact", "config", "message"),
    [
        ({"id": "c2", "name": "No Mail"}, {"subject": "s", "body": "b"}, "no email address"),
        ({"email": ""}, {"subject": "s", "body": "b"}, "no email address"),
        ({"email": "a@b.example\r\nBcc: x@y.example"}, {"subject": "s", "body": "b"}, "not usable"),
        ({"email": "a@b.example, c@d.example"}, {"subject": "s", "body": "b"}, "not usable"),
        (CONTACT, {"body": "b"}, "subject is required"),
        (CONTACT, {"subject": "s"}, "body is required"),
        (CONTACT, {"subject": "s", "body": 5}, "body must be text"),
    ],
)
def test_email_without_a_usable_address_or_config_fails_at_once(
    smtp: SmtpServer, contact: dict[str, Any], config: dict[str, Any], message: str
) -> None:
    sleeps = Sleeps()
    result = asyncio.run(
        EmailExecutor(smtp_config(smtp.port), sleep=sleeps).run(request("email", config, contact=contact))
    )
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error is not None
    assert message in result.error
    assert sleeps.delays == []
    assert smtp.sessions == 0


# ---------------------------------------------------------------------------------------------------- sms


def sms_executor(server: HttpServer, sleeps: Sleeps | None = None) -> SmsExecutor:
    config = SmsConfig(account_sid="AC123", auth_token="tok-secret", sender="+15550001111", base_url=server.url("/"))
    return SmsExecutor(config, sleep=sleeps or Sleeps())


def twilio(request: Recorded) -> Reply:
    assert request.path.endswith("/Messages.json")
    return json_reply(201, '{"sid": "SM42", "status": "queued"}')


def test_sms_posts_to_the_twilio_compatible_api(server: HttpServer) -> None:
    server.respond = twilio
    result = asyncio.run(sms_executor(server).run(request("sms", {"message": "Polls open at 7, Ada!"})))
    assert (result.outcome, result.ok) == ("sent", True)
    assert (result.data["message_sid"], result.data["message_status"]) == ("SM42", "queued")
    [hit] = server.hits
    assert (hit.method, hit.path) == ("POST", "/2010-04-01/Accounts/AC123/Messages.json")
    assert hit.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok-secret").decode()
    assert hit.headers["content-type"] == "application/x-www-form-urlencoded"
    assert hit.headers["idempotency-key"] == "inst1-node1-4"
    assert parse_qs(hit.body.decode()) == {
        "To": ["+15552013344"],
        "From": ["+15550001111"],
        "Body": ["Polls open at 7, Ada!"],
    }
    assert "tok-secret" not in str(result.details())
    assert "tok-secret" not in repr(sms_executor(server).config)


@pytest.mark.parametrize(
    "contact",
    [
        {"phone": "call me maybe", "phone_e164": None},  # stored as given: it did not parse
        {"phone": "+44 20 7946 0000"},  # no E.164 form recorded: the raw phone is never texted
        {"phone": "555", "phone_e164": "555"},
        {"phone": "+1 555", "phone_e164": "+1 555 201 3344"},
        {"phone_e164": "+0123456789"},
        {"phone_e164": "+1234567890123456"},
    ],
)
def test_sms_refuses_a_contact_without_an_e164_number(server: HttpServer, contact: dict[str, Any]) -> None:
    server.respond = twilio
    result = asyncio.run(sms_executor(server).run(request("sms", {"message": "hi"}, contact=contact)))
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error is not None
    assert "could not be read as a phone number" in result.error
    assert result.details()["error"] == result.error  # what the timeline event carries
    assert result.data["attempts"] == []
    assert server.hits == []


@pytest.mark.parametrize(
    ("contact", "config", "message"),
    [
        ({"name": "No Phone"}, {"message": "hi"}, "no phone number"),
        ({"phone": "", "phone_e164": None}, {"message": "hi"}, "no phone number"),
        (CONTACT, {}, "message is required"),
        (CONTACT, {"message": "   "}, "non-empty"),
        (CONTACT, {"message": "x" * 1601}, "longer than 1600"),
    ],
)
def test_sms_without_phone_or_message_fails_at_once(
    server: HttpServer, contact: dict[str, Any], config: dict[str, Any], message: str
) -> None:
    result = asyncio.run(sms_executor(server).run(request("sms", config, contact=contact)))
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.error is not None
    assert message in result.error
    assert server.hits == []


def test_sms_provider_errors(server: HttpServer) -> None:
    sleeps = Sleeps()
    server.respond = lambda r: json_reply(400, '{"code": 21211, "message": "Invalid To number", "status": 400}')
    result = asyncio.run(sms_executor(server, sleeps).run(request("sms", {"message": "hi"})))
    assert (result.outcome, result.ok) == ("failed", False)
    assert result.data["provider_error"] == {"code": 21211, "message": "Invalid To number"}
    assert len(server.hits) == 1  # a 400 is not retried
    assert sleeps.delays == []


def test_sms_is_retried_like_a_webhook(server: HttpServer) -> None:
    sleeps = Sleeps()
    accepted = json_reply(201, '{"sid": "SM42", "status": "queued"}')
    server.respond = sequence(Reply(429, {"Retry-After": "2"}), Reply(503), accepted)
    result = asyncio.run(sms_executor(server, sleeps).run(request("sms", {"message": "hi"})))
    assert result.outcome == "sent"
    assert [a["status_code"] for a in result.data["attempts"]] == [429, 503, 201]
    assert sleeps.delays[0] == 2.0
    assert {h.headers["idempotency-key"] for h in server.hits} == {"inst1-node1-4"}


# ---------------------------------------------------------------------------------------------------- registry


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "executors": "",
        "smtp_host": None,
        "smtp_from": None,
        "smtp_user": None,
        "smtp_password": None,
        "sms_base_url": None,
        "sms_account_sid": None,
        "sms_auth_token": None,
        "sms_from": None,
        "outbound_allow_private": False,
    }
    return Settings(_env_file=None, **(base | values))


FULL = {
    "smtp_host": "mail.example",
    "smtp_from": "team@campaign.example",
    "sms_account_sid": "AC1",
    "sms_auth_token": "t",
    "sms_from": "+15550001111",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("sms=sms,email=email,mail=webhook", {"sms": "sms", "email": "email", "mail": "webhook"}),
        (" sms = sms , , postcard=webhook ", {"sms": "sms", "postcard": "webhook"}),
        ("sms,email", {"sms": "sms", "email": "email"}),
        ("text_message=sms", {"text_message": "sms"}),
    ],
)
def test_parse_executors(value: str, expected: dict[str, str]) -> None:
    assert parse_executors(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fax=fax", "CBW_EXECUTORS: unknown executor 'fax' for action 'fax' (known: email, sms, webhook)"),
        ("sms=twilio", "unknown executor 'twilio'"),
        ("=sms", "is not action=kind"),
        ("a b=sms", "is not action=kind"),
        ("sms=sms,sms=webhook", "action 'sms' is listed twice"),
        ("sms=", "unknown executor ''"),
    ],
)
def test_parse_executors_refuses_bad_values(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="CBW_EXECUTORS") as caught:
        parse_executors(value)
    assert message in str(caught.value)


def test_build_executors_maps_actions_to_shared_executors() -> None:
    built = build_executors(settings(executors="sms=sms,email=email,mail=webhook,postcard=webhook", **FULL))
    assert set(built) == {"sms", "email", "mail", "postcard"}
    assert isinstance(built["sms"], SmsExecutor)
    assert isinstance(built["email"], EmailExecutor)
    assert isinstance(built["mail"], WebhookExecutor)
    assert built["mail"] is built["postcard"]
    assert built["mail"].allow_private is False
    assert built["sms"].config.base_url == "https://api.twilio.com"
    assert built["email"].config.host == "mail.example"
    assert build_executors(settings()) == {}
    allowed = build_executors(settings(executors="mail=webhook", outbound_allow_private=True))
    assert isinstance(allowed["mail"], WebhookExecutor)
    assert allowed["mail"].allow_private is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"executors": "email=email"}, "the email executor needs CBW_SMTP_HOST and CBW_SMTP_FROM"),
        ({"executors": "email=email", "smtp_host": "m"}, "needs CBW_SMTP_FROM"),
        (
            {"executors": "sms=sms"},
            "the sms executor needs CBW_SMS_ACCOUNT_SID and CBW_SMS_AUTH_TOKEN and CBW_SMS_FROM",
        ),
        ({"executors": "sms=sms", **FULL, "sms_base_url": "ftp://x"}, "CBW_SMS_BASE_URL"),
        ({"executors": "email=email", **FULL, "smtp_password": "p"}, "CBW_SMTP_PASSWORD is set without CBW_SMTP_USER"),
        ({"executors": "x=nope"}, "unknown executor 'nope'"),
        ({"executors": "email=email", **FULL, "smtp_from": "campaign"}, "CBW_SMTP_FROM: an email address"),
    ],
)
def test_build_executors_refuses_missing_settings(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="CBW_") as caught:
        build_executors(settings(**values))
    assert message in str(caught.value)
