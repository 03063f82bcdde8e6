"""Outbound HTTP against real local servers: retries and backoff (with an injected sleep, so nothing waits), size
caps, redirects, idempotency keys, timeouts, TLS verified against the original name while connected to the pinned
address. The servers are on loopback, so these calls pass `allow_private=True`; the guard has its own tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.outbound import OutboundError, OutboundTimeout, send, send_with_retries
from cbworkflow.outbound.guard import IPAddress
from cbworkflow.outbound.http import (
    USER_AGENT,
    OutboundConnectionError,
    _may_follow,
    _parse,
)
from cbworkflow.retry import retry_after_seconds
from conftest import unavailable
from local_servers import HttpServer, Recorded, Reply, drip, free_port, json_reply, make_certificate, sequence


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as running:
        yield running


class Sleeps:
    """An injected sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def retries(url: str, sleeps: Sleeps, **kwargs: Any) -> Any:
    kwargs.setdefault("max_attempts", 5)
    return asyncio.run(
        send_with_retries(
            kwargs.pop("method", "POST"), url, allow_private=True, sleep=sleeps, jitter=lambda: 1.0, **kwargs
        )
    )


# ------------------------------------------------------------------------------------------------ one request


def test_a_request_carries_our_headers_and_the_original_host(server: HttpServer) -> None:
    server.respond = lambda request: json_reply(200, '{"outcome": "yes", "n": 1}', **{"X-Reply": "a"})
    response = asyncio.run(
        send(
            "post",
            server.url("/hook?x=1", host="localhost"),
            headers={"X-Campaign": "kent", "Host": "evil.example", "Content-Length": "5"},
            json_body={"name": "Ada", "note": "é"},
            allow_private=True,
            idempotency_key="inst1-node2-7",
        )
    )
    assert response.status_code == 200
    assert response.is_success
    assert response.json == {"outcome": "yes", "n": 1}
    assert response.headers["x-reply"] == "a"
    assert response.url == f"http://localhost:{server.port}/hook?x=1"
    assert response.truncated is False
    [hit] = server.hits
    assert (hit.method, hit.path) == ("POST", "/hook?x=1")
    assert hit.headers["host"] == f"localhost:{server.port}"  # the name, not the pinned address; not the caller's
    assert hit.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("cbworkflow/")
    assert hit.headers["idempotency-key"] == "inst1-node2-7"
    assert hit.headers["x-campaign"] == "kent"
    assert hit.headers["content-type"] == "application/json"
    assert hit.body.decode() == '{"name":"Ada","note":"é"}'


def test_a_body_that_is_not_json_leaves_json_empty(server: HttpServer) -> None:
    server.respond = lambda request: Reply(200, {"Content-Type": "text/plain"}, b"fine, thanks")
    response = asyncio.run(send("GET", server.url(), allow_private=True))
    assert (response.body, response.json) == (b"fine, thanks", None)


def test_credentials_in_the_url_become_basic_auth_and_are_not_shown(server: HttpServer) -> None:
    response = asyncio.run(send("GET", server.url().replace("http://", "http://ann:s3cret@"), allow_private=True))
    assert server.hits[0].headers["authorization"] == "Basic YW5uOnMzY3JldA=="
    assert "s3cret" not in response.url


def test_the_response_is_capped_while_streaming(server: HttpServer) -> None:
    ten_mb = 10 * 1024 * 1024
    server.respond = lambda request: Reply(200, {}, (b"x" * 65536 for _ in range(160)), length=ten_mb)
    response = asyncio.run(send("GET", server.url(), allow_private=True, max_response_bytes=1_000_000))
    assert response.truncated is True
    assert len(response.body) == 1_000_000
    assert response.json is None


def test_a_compressed_body_is_inflated_within_the_cap(server: HttpServer) -> None:
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))  # ~10 KB on the wire, 10 MB inflated
    server.respond = lambda request: Reply(200, {"Content-Encoding": "gzip"}, bomb)
    response = asyncio.run(send("GET", server.url(), allow_private=True, max_response_bytes=50_000))
    assert (len(response.body), response.truncated) == (50_000, True)
    small = gzip.compress(b'{"outcome": "ok"}')
    server.respond = lambda request: Reply(200, {"Content-Encoding": "gzip"}, small)
    response = asyncio.run(send("GET", server.url(), allow_private=True))
    assert response.json == {"outcome": "ok"}
    assert server.hits[-1].headers["accept-encoding"] == "identity"


def test_a_body_of_exactly_the_cap_is_not_truncated(server: HttpServer) -> None:
    server.respond = lambda request: Reply(200, {}, b"y" * 1000)
    response = asyncio.run(send("GET", server.url(), allow_private=True, max_response_bytes=1000))
    assert (len(response.body), response.truncated) == (1000, False)


def test_deeply_nested_json_is_not_a_crash(server: HttpServer) -> None:
    server.respond = lambda request: Reply(200, {}, b"[" * 200_000)
    assert asyncio.run(send("GET", server.url(), allow_private=True)).json is None


def test_read_timeout(server: HttpServer) -> None:
    server.respond = lambda request: Reply(200, {}, b"late", delay_s=5)
    with pytest.raises(OutboundTimeout):
        asyncio.run(send("GET", server.url(), allow_private=True, timeout_s=0.3))


def test_the_whole_call_has_a_deadline_even_when_bytes_keep_trickling(server: HttpServer) -> None:
    """Each read gets a byte in time, so only the overall deadline can stop it."""
    server.respond = lambda request: Reply(200, {}, drip(b"z", 0.05, 400), length=400)
    with pytest.raises(OutboundTimeout, match=r"within 0\.5s"):
        asyncio.run(send("GET", server.url(), allow_private=True, timeout_s=0.5))


def test_connection_refused_is_a_retryable_connection_error() -> None:
    with pytest.raises(OutboundConnectionError) as caught:
        asyncio.run(send("GET", f"http://127.0.0.1:{free_port()}/", allow_private=True, timeout_s=2))
    assert caught.value.retryable


def test_invalid_requests_are_refused_before_sending(server: HttpServer) -> None:
    with pytest.raises(OutboundError, match="invalid header"):
        asyncio.run(send("GET", server.url(), headers={"Bad Name": "x"}, allow_private=True))
    with pytest.raises(OutboundError, match="invalid value"):
        asyncio.run(send("GET", server.url(), headers={"X-A": "a\r\nX-Injected: 1"}, allow_private=True))
    with pytest.raises(OutboundError, match="invalid method"):
        asyncio.run(send("GE T", server.url(), allow_private=True))
    with pytest.raises(TypeError):
        asyncio.run(send("POST", server.url(), json_body={}, content=b"x", allow_private=True))
    assert server.hits == []


# ---------------------------------------------------------------------------------------------------- redirects


def test_a_same_host_redirect_is_followed_keeping_method_and_body(server: HttpServer) -> None:
    def respond(request: Recorded) -> Reply:
        if request.path == "/old":
            return Reply(308, {"Location": "/new"})
        return json_reply(200, '{"moved": true}')

    server.respond = respond
    response = asyncio.run(
        send("POST", server.url("/old"), json_body={"a": 1}, allow_private=True, idempotency_key="k1")
    )
    assert (response.status_code, response.redirects, response.json) == (200, 1, {"moved": True})
    assert response.url.endswith("/new")
    assert [(h.method, h.path, h.body, h.headers["idempotency-key"]) for h in server.hits] == [
        ("POST", "/old", b'{"a":1}', "k1"),
        ("POST", "/new", b'{"a":1}', "k1"),
    ]


def test_303_turns_into_a_get_without_body(server: HttpServer) -> None:
    def respond(request: Recorded) -> Reply:
        return Reply(303, {"Location": "/result"}) if request.path == "/submit" else json_reply(200, "{}")

    server.respond = respond
    response = asyncio.run(send("POST", server.url("/submit"), json_body={"a": 1}, allow_private=True))
    assert response.status_code == 200
    assert [(h.method, h.body) for h in server.hits] == [("POST", b'{"a":1}'), ("GET", b"")]
    assert "content-type" not in server.hits[1].headers


def test_a_redirect_to_another_host_is_returned_not_followed(server: HttpServer) -> None:
    with HttpServer() as other:
        server.respond = lambda request: Reply(302, {"Location": other.url("/elsewhere")})
        response = asyncio.run(send("GET", server.url(host="localhost"), allow_private=True))
        assert (response.status_code, response.redirects) == (302, 0)
        assert response.headers["location"] == other.url("/elsewhere")
        assert other.hits == []
        # the same machine under the same name but another port is another origin too
        server.respond = lambda request: Reply(302, {"Location": other.url("/elsewhere", host="localhost")})
        assert asyncio.run(send("GET", server.url(host="localhost"), allow_private=True)).status_code == 302
        assert other.hits == []


def test_at_most_max_redirects_are_followed(server: HttpServer) -> None:
    server.respond = lambda request: Reply(302, {"Location": f"/r{len(server.hits)}"})
    response = asyncio.run(send("GET", server.url(), allow_private=True, max_redirects=3))
    assert (response.status_code, response.redirects) == (302, 3)
    assert len(server.hits) == 4
    assert asyncio.run(send("GET", server.url(), allow_private=True, max_redirects=0)).redirects == 0


@pytest.mark.parametrize(
    ("start", "location", "followed"),
    [
        ("http://a.example/x", "http://a.example/y", True),
        ("http://a.example/x", "https://a.example/y", True),  # the upgrade
        ("http://a.example:8080/x", "https://a.example:8080/y", True),
        ("http://a.example/x", "http://A.EXAMPLE/y", True),
        ("https://a.example/x", "http://a.example/y", False),  # no downgrade
        ("http://a.example/x", "http://a.example:8080/y", False),
        ("http://a.example/x", "https://a.example:8443/y", False),
        ("http://a.example/x", "http://b.example/y", False),
        ("http://a.example/x", "http://sub.a.example/y", False),
        ("http://a.example/x", "http://127.0.0.1/y", False),
    ],
)
def test_which_redirects_may_be_followed(start: str, location: str, followed: bool) -> None:
    assert _may_follow(_parse(start), _parse(location)) is followed


# ---------------------------------------------------------------------------------------------------- retries


def test_5xx_is_retried_with_exponential_backoff_and_the_same_idempotency_key(server: HttpServer) -> None:
    server.respond = sequence(Reply(500), Reply(502), Reply(503), json_reply(200, "{}"))
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps, idempotency_key="inst-node-3", json_body={"n": 1})
    assert response is not None
    assert response.status_code == 200
    assert [a.status_code for a in attempts] == [500, 502, 503, 200]
    assert sleeps.delays == [0.5, 1.0, 2.0]  # base 0.5, doubling; jitter pinned at its top
    assert {h.headers["idempotency-key"] for h in server.hits} == {"inst-node-3"}
    assert {h.body for h in server.hits} == {b'{"n":1}'}


def test_backoff_has_full_jitter_and_a_cap(server: HttpServer) -> None:
    server.respond = lambda request: Reply(500)
    sleeps = Sleeps()
    asyncio.run(
        send_with_retries(
            "GET",
            server.url(),
            max_attempts=9,
            allow_private=True,
            sleep=sleeps,
            jitter=lambda: 0.5,
            backoff_base_s=1,
            backoff_max_s=10,
        )
    )
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_attempts_are_exhausted_and_the_last_answer_returned(server: HttpServer) -> None:
    server.respond = lambda request: Reply(503)
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps, max_attempts=3)
    assert response is not None
    assert response.status_code == 503
    assert len(attempts) == 3
    assert len(sleeps.delays) == 2
    assert len(server.hits) == 3


def test_429_honours_retry_after_seconds(server: HttpServer) -> None:
    server.respond = sequence(Reply(429, {"Retry-After": "7"}), Reply(429, {"Retry-After": "3600"}), Reply(204))
    sleeps = Sleeps()
    response, _ = retries(server.url(), sleeps)
    assert response is not None
    assert response.status_code == 204
    assert sleeps.delays == [7.0, 30.0]  # the second is capped at backoff_max_s


def test_429_honours_retry_after_as_an_http_date(server: HttpServer) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    server.respond = sequence(Reply(429, {"Retry-After": header}), Reply(200))
    sleeps = Sleeps()
    retries(server.url(), sleeps)
    assert len(sleeps.delays) == 1
    assert 15 <= sleeps.delays[0] <= 20


def test_retry_after_parsing() -> None:
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Thu, 02 Jan 2025 03:04:35 GMT", now) == 30
    assert retry_after_seconds("Wed, 01 Jan 2025 00:00:00 GMT", now) == 0  # in the past
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("-5", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_not_retried(server: HttpServer, status: int) -> None:
    server.respond = lambda request: Reply(status)
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps)
    assert response is not None
    assert response.status_code == status
    assert len(attempts) == 1
    assert sleeps.delays == []


def test_a_cross_host_redirect_is_final_not_retried(server: HttpServer) -> None:
    server.respond = lambda request: Reply(302, {"Location": "http://elsewhere.example/"})
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps)
    assert response is not None
    assert (response.status_code, len(attempts)) == (302, 1)


def test_connection_refused_is_retried() -> None:
    sleeps = Sleeps()
    response, attempts = retries(f"http://127.0.0.1:{free_port()}/", sleeps, max_attempts=3, timeout_s=2)
    assert response is None
    assert [a.status_code for a in attempts] == [None, None, None]
    assert all("ConnectError" in (a.error or "") for a in attempts)
    assert sleeps.delays == [0.5, 1.0]


def test_a_dropped_connection_is_retried(server: HttpServer) -> None:
    server.respond = sequence(Reply(drop=True), json_reply(200, "{}"))
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps)
    assert response is not None
    assert response.status_code == 200
    assert attempts[0].error is not None
    assert attempts[0].status_code is None
    assert len(server.hits) == 2


def test_a_read_timeout_is_retried(server: HttpServer) -> None:
    server.respond = sequence(Reply(200, {}, b"late", delay_s=5), json_reply(200, '{"ok": 1}'))
    sleeps = Sleeps()
    response, attempts = retries(server.url(), sleeps, timeout_s=0.3, idempotency_key="same")
    assert response is not None
    assert response.json == {"ok": 1}
    assert "time" in (attempts[0].error or "").lower()
    assert [h.headers["idempotency-key"] for h in server.hits] == ["same", "same"]


def test_a_total_budget_stops_retrying_before_it_would_run_out(server: HttpServer) -> None:
    server.respond = lambda request: Reply(503, {"Retry-After": "20"})
    sleeps = Sleeps()
    _, attempts = retries(server.url(), sleeps, max_attempts=10, max_total_s=50)
    assert len(attempts) == 3  # 20 s + 20 s of waits fit in 50 s; a third wait would not
    assert sleeps.delays == [20.0, 20.0]


def test_an_unresolvable_name_is_not_retried() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        import socket

        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sleeps = Sleeps()
    response, attempts = retries("http://nowhere.example/", sleeps, resolver=resolver)
    assert response is None
    assert len(attempts) == 1


# ---------------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        unavailable("no openssl command to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    return {"hooks.test": make_certificate(directory, "hooks.test")}


def test_https_is_pinned_to_the_vetted_address_and_verifies_the_original_name(
    certificates: dict[str, tuple[Path, Path]],
) -> None:
    cert, key = certificates["hooks.test"]
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    with HttpServer(tls=server_context) as server:
        response = asyncio.run(
            send(
                "GET",
                server.url("/secure", host="hooks.test", scheme="https"),
                allow_private=True,
                resolver=resolver,
                ssl_context=client_context,
            )
        )
        assert response.status_code == 200
        assert server.sni == ["hooks.test"]
        assert server.hits[0].headers["host"] == f"hooks.test:{server.port}"
        # Another name pinned to the same address: the certificate does not match it, so no request is made.
        with pytest.raises(OutboundConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            asyncio.run(
                send(
                    "GET",
                    server.url("/secure", host="other.test", scheme="https"),
                    allow_private=True,
                    resolver=resolver,
                    ssl_context=client_context,
                )
            )
        assert len(server.hits) == 1
