"""The SSRF guard: every way of writing an internal address is refused, and the target is never contacted.

A real HTTP server listens on 127.0.0.1 (and ::1 when the machine has IPv6) and records every request; the blocked
URLs point at it in all their spellings, and each test asserts it got no request at all. Name resolution is the
system's for the numeric forms (they are the OS's to read) and an injected resolver where a test needs a name to
resolve somewhere (rebinding, redirects), since /etc/hosts and DNS are not the test's to change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator

import pytest
from pydantic import TypeAdapter

from cbworkflow.engine.render import render_url
from cbworkflow.models.templates import Node
from cbworkflow.outbound import OutboundBlocked, OutboundError, is_forbidden, resolve_allowed, send
from cbworkflow.outbound.guard import IPAddress, Policy
from cbworkflow.outbound.http import OutboundConnectionError, send_with_retries
from cbworkflow.validation import validate_template
from conftest import unavailable
from local_servers import HttpServer, Reply, json_reply


@pytest.fixture
def target() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


@pytest.fixture
def target6() -> Iterator[HttpServer | None]:
    try:
        server = HttpServer(host="::1")
    except OSError:
        yield None  # no IPv6 loopback here: the [::1] URL must still be refused
        return
    with server:
        yield server


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


FORBIDDEN = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("168.63.129.16", "metadata"),
    ("100.100.100.200", "metadata"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.255", "CGNAT"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fd00::1", "unique local"),
    ("fc00::1", "unique local"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("100::1", "discard"),
    ("2001:db8::1", "documentation"),
    ("64:ff9b:1::a", "NAT64"),
    # IPv6 carrying an IPv4 address: judged by the IPv4 address
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, loopback"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.1.2.3", "private"),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
    ("::10.0.0.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
    ("2002:a9fe:a9fe::", "6to4 form of 169.254.169.254"),
    ("2002:c0a8:101::1", "192.168.1.1"),
    # Teredo: the client address is stored inverted: ~0x7f000001 = 0x80fffffe
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo client form of 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo client form of 10.0.0.1"),
]


@pytest.mark.parametrize(("address", "why"), FORBIDDEN)
def test_forbidden_addresses(address: str, why: str) -> None:
    reason = is_forbidden(ip(address))
    assert reason is not None, address
    assert why in reason


ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
]


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden(ip(address)) is None


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "017700000001", "localhost", "0"])
def test_numeric_and_local_names_resolve_as_the_os_reads_them_and_are_refused(host: str) -> None:
    with pytest.raises(OutboundBlocked, match=r"127\.0\.0\.1|0\.0\.0\.0|::1"):
        asyncio.run(resolve_allowed(host, 80, allow_private=False))


def test_allow_private_returns_the_addresses() -> None:
    assert ip("127.0.0.1") in asyncio.run(resolve_allowed("127.1", 80, allow_private=True))


def test_one_forbidden_address_among_public_ones_refuses_the_name() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ip("93.184.216.34"), ip("10.0.0.5")]

    with pytest.raises(OutboundBlocked, match=r"hooks\.example resolves to 10\.0\.0\.5"):
        asyncio.run(resolve_allowed("hooks.example", 443, allow_private=False, resolver=resolver))


def test_a_literal_address_never_reaches_the_resolver() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        raise AssertionError("resolver called for a literal")

    assert asyncio.run(resolve_allowed("8.8.8.8", 80, allow_private=False, resolver=resolver)) == [ip("8.8.8.8")]


def test_a_name_that_does_not_resolve_is_an_error_not_a_block() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(OutboundError) as caught:
        asyncio.run(resolve_allowed("nowhere.example", 80, allow_private=False, resolver=resolver))
    assert not isinstance(caught.value, OutboundBlocked)
    assert not caught.value.retryable


def blocked_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://LOCALHOST:{port}/",
        f"http://127.1:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://0177.0.0.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://[::127.0.0.1]:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://0:{port}/",
        f"http://user:pass@127.0.0.1:{port}/",
        f"https://127.0.0.1:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.64.0.1/",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[ff02::1]/",
    ]


def test_the_corpus_is_blocked_and_the_target_never_contacted(target: HttpServer, target6: HttpServer | None) -> None:
    async def go() -> list[str]:
        refused = []
        for url in blocked_urls(target.port):
            with pytest.raises(OutboundBlocked) as caught:
                await send("GET", url, timeout_s=2)
            refused.append(caught.value.reason)
        return refused

    reasons = asyncio.run(go())
    assert len(reasons) == len(blocked_urls(target.port))
    assert target.hits == []
    if target6 is not None:
        assert target6.hits == []


def test_a_fully_qualified_localhost_is_refused_or_unresolvable(target: HttpServer) -> None:
    """`localhost.` is up to the resolver (DNS may not know it): either way it is never called."""
    with pytest.raises(OutboundError):
        asyncio.run(send("GET", target.url(host="localhost."), timeout_s=5))
    assert target.hits == []


def test_blocked_is_not_retried(target: HttpServer) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    response, attempts = asyncio.run(send_with_retries("POST", target.url(), max_attempts=5, sleep=sleep))
    assert response is None
    assert len(attempts) == 1
    assert attempts[0].error is not None
    assert "loopback" in attempts[0].error
    assert slept == []
    assert target.hits == []


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/", "dict://127.0.0.1:11211/", "//example.com/"],
)
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(OutboundBlocked, match="only http and https"):
        asyncio.run(send("GET", url))


@pytest.mark.parametrize(
    "url",
    [
        "http://%31%32%37.0.0.1/",  # percent-encoded host: refused rather than decoded
        "http://127.0.0.1 /",
        "http://exa mple.com/",
        "http://[fe80::1%25lo]/",
        "http:///path",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://a..b/",
        "http://127.0.0.1:80\\@example.com/",  # parsed differently by browsers and urlsplit
    ],
)
def test_malformed_urls_are_refused_before_any_connection(url: str, target: HttpServer) -> None:
    with pytest.raises(OutboundError) as caught:
        asyncio.run(send("GET", url, allow_private=True))
    assert not caught.value.retryable
    assert target.hits == []


def test_a_name_resolving_to_loopback_is_blocked(target: HttpServer) -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ip("127.0.0.1")]

    with pytest.raises(OutboundBlocked, match=r"evil\.example resolves to 127\.0\.0\.1"):
        asyncio.run(send("GET", target.url(host="evil.example"), resolver=resolver))
    assert target.hits == []


def test_allow_private_reaches_the_local_server(target: HttpServer) -> None:
    response = asyncio.run(send("GET", target.url("/hello"), allow_private=True))
    assert response.status_code == 200
    assert response.peer == "127.0.0.1"
    assert [hit.path for hit in target.hits] == ["/hello"]


def test_allow_private_reaches_the_ipv6_loopback(target6: HttpServer | None) -> None:
    if target6 is None:
        unavailable("no IPv6 loopback on this machine")
    response = asyncio.run(send("GET", target6.url("/six"), allow_private=True))
    assert response.status_code == 200
    assert [hit.path for hit in target6.hits] == ["/six"]


def treat_as_public(*addresses: str) -> Policy:
    """The real policy, except that the given loopback addresses count as public: a stand-in for a public host,
    since the tests have no public host to talk to."""
    public = {ip(a) for a in addresses}

    def policy(address: IPAddress) -> str | None:
        return None if address in public else is_forbidden(address)

    return policy


def test_dns_rebinding_cannot_reach_loopback(target: HttpServer) -> None:
    """The name resolves to a 'public' address when checked and to loopback afterwards: the connection goes to the
    checked address (127.0.0.2, where nothing listens), never to the server on 127.0.0.1."""
    answers: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        answer = "127.0.0.2" if not answers else "127.0.0.1"
        answers.append(answer)
        return [ip(answer)]

    async def go() -> None:
        with pytest.raises(OutboundConnectionError):
            await send(
                "GET",
                target.url(host="rebind.example"),
                resolver=resolver,
                policy=treat_as_public("127.0.0.2"),
                timeout_s=2,
            )

    asyncio.run(go())
    assert answers == ["127.0.0.2"]  # resolved once: httpx never resolved the name itself
    assert target.hits == []


def test_dns_rebinding_across_retries_is_checked_each_time(target: HttpServer) -> None:
    answers: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        answer = "127.0.0.2" if not answers else "127.0.0.1"
        answers.append(answer)
        return [ip(answer)]

    async def sleep(delay: float) -> None:
        pass

    response, attempts = asyncio.run(
        send_with_retries(
            "POST",
            target.url(host="rebind.example"),
            max_attempts=5,
            sleep=sleep,
            resolver=resolver,
            policy=treat_as_public("127.0.0.2"),
        )
    )
    assert response is None
    assert [a.error is not None for a in attempts] == [True, True]
    assert attempts[1].error is not None
    assert "127.0.0.1: loopback" in attempts[1].error  # the second resolution is refused, and that is final
    assert target.hits == []


def test_redirect_hops_are_checked_again(target: HttpServer) -> None:
    """Same-host redirect: followed, but the host is resolved and checked again, and now it is private."""
    target.respond = lambda request: Reply(302, {"Location": "/next"})
    answers: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        answer = "127.0.0.1" if not answers else "10.0.0.7"
        answers.append(answer)
        return [ip(answer)]

    with pytest.raises(OutboundBlocked, match=r"10\.0\.0\.7: private"):
        asyncio.run(
            send(
                "GET",
                target.url(host="hooks.example"),
                resolver=resolver,
                policy=treat_as_public("127.0.0.1"),
            )
        )
    assert answers == ["127.0.0.1", "10.0.0.7"]
    assert [hit.path for hit in target.hits] == ["/"]


def test_redirect_to_loopback_on_another_host_is_not_followed(target: HttpServer) -> None:
    with HttpServer() as internal:
        target.respond = lambda request: Reply(302, {"Location": internal.url("/admin")})
        response = asyncio.run(send("GET", target.url(host="localhost"), allow_private=True))
    assert response.status_code == 302
    assert response.redirects == 0
    assert internal.hits == []


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://0x7f000001/", "file:///etc/passwd"],
)
def test_redirects_to_internal_addresses_are_returned_not_followed(target: HttpServer, location: str) -> None:
    target.respond = lambda request: Reply(307, {"Location": location})
    response = asyncio.run(send("POST", target.url(), allow_private=True, json_body={"a": 1}))
    assert response.status_code == 307
    assert len(target.hits) == 1


def test_the_connected_peer_is_checked_too(target: HttpServer) -> None:
    """Defence in depth: if the socket ends up connected to a refused address, the answer is discarded."""
    calls: list[IPAddress] = []

    def flaky_policy(address: IPAddress) -> str | None:
        calls.append(address)
        return None if len(calls) == 1 else is_forbidden(address)

    with pytest.raises(OutboundBlocked, match=r"connected to 127\.0\.0\.1: loopback"):
        asyncio.run(send("GET", target.url(), policy=flaky_policy))
    assert calls == [ip("127.0.0.1"), ip("127.0.0.1")]


def test_json_reply_helper_is_what_the_server_answers(target: HttpServer) -> None:
    target.respond = lambda request: json_reply(201, '{"outcome": "yes"}')
    response = asyncio.run(send("POST", target.url(), allow_private=True, json_body={}))
    assert (response.status_code, response.json) == (201, {"outcome": "yes"})


# ----------------------------------------------------------------------------- one URL check, validation and runtime
# Each URL is called by the runtime (up to the address check) and accepted by validation, or refused by both.
CALLED = [
    "https://example.org/hook",
    "http://EXAMPLE.org:8080/x?y=1#frag",
    "http://example.org./",  # a fully qualified name
    "http://a_b.example.org/",
    "http://example.org?x=1",
    "http://example.org:/",  # an empty port is the default port
    "http://example.org:65535/",
    "http://example.org:1/",
    "http://example.org:08080/",
    "http://user:p%40ss@example.org/",  # credentials become Basic auth
    "http://:token@example.org/",
    "http://bücher.example/",  # IDNA
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]:443/",
    "http://[2606:4700:4700:0:0:0:0:1111]/",
    "http://8.8.8.8/",
    "http://127.1/",  # numeric forms are the resolver's to read, and the address check's to refuse
    "http://2130706433/",
    "http://example.org/p/{state.escape}?q={state.escape}&c={contact.id}#{state.escape}",
    "http://example.org/{state.missing}",
]
REFUSED = [
    "http://127.0.0.1:0/",  # port 0
    "http://example.org:0/",
    "http://example.org:65536/",
    "http://example.org:99999/",
    "http://example.org:123456/",
    "http://example.org:-1/",
    "http://example.org:+80/",
    "http://example.org:\uff18\uff10/",  # full-width digits
    "http://example.org:80:80/",
    "http://example.org:http/",
    "http://[::1%25lo]/",  # zone ids
    "http://[fe80::1%25eth0]:8080/",
    "http://[fe80::1%eth0]/",
    "http://[v1.fe]/",  # IPvFuture
    "http://[1.2.3.4]/",  # IPv4 in brackets
    "http://[::1]x/",  # junk after the brackets
    "http://[::1]:80x/",
    "http://[::1/",
    "http://[12345::]/",
    "http://[::ffff:1.2.3]/",
    "http://[]/",
    "http://::1/",  # IPv6 without brackets
    "http:///path",  # no host
    "http://:80/",
    "http://user@/",
    "http://user:pw@:80/",
    "http://a@b@example.org/",  # credentials with characters that must be encoded
    "http://üser:pw@example.org/",
    "http://us[er@example.org/",
    "http://%31%32%37.0.0.1/",  # a percent-encoded host
    "http://a..b/",
    "http://-a.example.org/",
    "http://a-.example.org/",
    "http://" + "a" * 64 + ".example.org/",  # a label over 63 characters
    "http://" + "a." * 127 + "org/",  # a name over 253 characters
    "http://ex ample.org/",
    "http://example.org/a b",
    "http://example.org/\x00",
    "http://example.org/\u00a0",
    "http://example.org/\u0085",
    "http://example.org\\@evil.example/",
    "ftp://example.org/",
    "example.org/hook",
    "//example.org/",
    "https://",
    "http://{state.escape}/x",  # the scheme and authority never come from a placeholder
    "http://example.org:{state.port}/",
    "http://{state.user}@example.org/",
    "{state.scheme}://example.org/",
]
PLACEHOLDER_DATA = {"state": {"escape": "../../admin?x=1#", "port": "80", "user": "u"}, "contact": {"id": "c1"}}


class Reached(Exception):
    """The runtime got past the URL check to the address check: the URL is one it calls."""


async def reached_resolver(host: str, port: int) -> list[IPAddress]:
    raise Reached(host)


def reached_policy(address: IPAddress) -> str | None:
    raise Reached(str(address))


def validation_problems(url: str) -> list[str]:
    node = {"type": "webhook", "webhook_url": url, "transitions": {"success": "end", "failure": "end"}}
    nodes = {"a": TypeAdapter(Node).validate_python(node), "end": TypeAdapter(Node).validate_python({"type": "end"})}
    report = validate_template("a", nodes)
    return [f"{e.code}: {e.message}" for e in report.errors]


@pytest.mark.parametrize(("url", "called"), [(u, True) for u in CALLED] + [(u, False) for u in REFUSED])
def test_validation_and_the_runtime_agree_on_every_url(url: str, called: bool) -> None:
    problems = validation_problems(url)
    assert [p.split(":", 1)[0] for p in problems] == ([] if called else ["webhook_url_invalid"]), problems
    rendered = render_url(url, PLACEHOLDER_DATA)  # what the worker hands to the outbound client
    call = send("POST", rendered, resolver=reached_resolver, policy=reached_policy, timeout_s=2)
    if called:
        with pytest.raises(Reached):
            asyncio.run(call)
    else:
        with pytest.raises(OutboundError) as caught:  # before any address is looked up, so before any connection
            asyncio.run(call)
        assert not caught.value.retryable
