"""Outbound HTTP for webhooks and executors: one request, pinned to a vetted address, bounded in size and time.

Why it is not a plain `httpx.post(url)`:

- **SSRF.** The host is resolved once by `guard.resolve_allowed` (refused if any address is private, loopback,
  metadata...), and the connection is made to that vetted IP: the URL handed to httpx carries the IP, the `Host`
  header carries the original name, and for https the `sni_hostname` extension makes TLS present and verify the
  original name. httpx never resolves the name itself, so a DNS answer that changes after the check (rebinding)
  cannot redirect the connection. After connecting, the peer address of the socket is checked again.
- **Redirects** are never followed by httpx. We follow at most `max_redirects` to the SAME host (http→https is the
  only scheme change allowed), resolving and checking again on each hop; a redirect elsewhere is returned as the
  final (3xx) response, which callers treat as a failure. The method and body are kept (a webhook's payload must not
  silently become a GET), except on 303, which means "GET the result there".
- **Size and time.** The body is streamed and kept up to `max_response_bytes` (`truncated` says it was cut);
  compressed bodies are inflated with the same bound. `timeout_s` bounds the connect and each read, and also the
  whole call (resolution, redirects, body) as one deadline.
- **No ambient configuration.** `trust_env=False`: no proxy from the environment (a proxy would resolve the name
  itself and defeat the pinning), no `.netrc`.

A new `httpx.AsyncClient` is made per call (its connection pool is keyed by IP, so sharing one between hosts could
send a request for one name over a TLS connection verified for another). With the SSL context built once and
shared, a client costs about 0.1 ms (45 ms with httpx's default of loading the CA bundle each time); there is
nothing to close at shutdown.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import json
import random
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from cbworkflow import retry
from cbworkflow.outbound.guard import (
    IPAddress,
    OutboundBlocked,
    OutboundError,
    Policy,
    Resolver,
    is_forbidden,
    literal_address,
    resolve_allowed,
)
from cbworkflow.urls import DEFAULT_PORTS, UrlError, UrlSchemeError, check_url


def _version() -> str:
    try:
        return importlib.metadata.version("cbworkflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


USER_AGENT = f"cbworkflow/{_version()}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers the caller may not set: they describe the connection, which is ours.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class OutboundTimeout(OutboundError):
    """No complete answer in time (connect, a read, or the whole call)."""

    retryable = True


class OutboundConnectionError(OutboundError):
    """The connection failed or broke (refused, reset, TLS failure, malformed answer)."""

    retryable = True


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # at most max_response_bytes
    json: Any | None  # the body parsed as JSON when it is complete and valid JSON, else None
    url: str  # the URL that answered (after same-host redirects), without credentials
    elapsed_ms: float
    truncated: bool = False
    redirects: int = 0
    peer: str | None = None  # the address actually connected to

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class Attempt:
    """One try of `send_with_retries`: a status code or an error, for the timeline."""

    status_code: int | None
    error: str | None
    elapsed_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """httpx's verifying context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once: building it costs ~30 ms."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA), lower case, IPv6 without brackets
    port: int
    explicit_port: bool
    userinfo: str  # raw "user:pass" or ""
    path_query: str  # "/path?query"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port and self.port != DEFAULT_PORTS[self.scheme] else host

    @property
    def shown(self) -> str:
        """The URL without credentials."""
        return f"{self.scheme}://{self.host_header}{self.path_query}"

    def pinned(self, address: IPAddress) -> str:
        """The URL with the host replaced by the vetted address."""
        host = f"[{address}]" if address.version == 6 else str(address)
        userinfo = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{userinfo}{host}:{self.port}{self.path_query}"


def _parse(url: str) -> _Target:
    """The URL in parts, by the one check validation also applies (`cbworkflow.urls.check_url`)."""
    try:
        checked = check_url(url)
    except UrlSchemeError as exc:
        raise OutboundBlocked(exc.reason) from None
    except UrlError as exc:
        raise OutboundError(f"invalid URL: {exc.reason}") from None
    return _Target(
        checked.scheme, checked.host, checked.port, checked.explicit_port, checked.userinfo, checked.path_query
    )


def _may_follow(current: _Target, target: _Target) -> bool:
    """Same host; same scheme and port, or the upgrade from http to https (on 443 or the same port)."""
    if target.host != current.host:
        return False
    if target.scheme == current.scheme:
        return target.port == current.port
    return current.scheme == "http" and target.scheme == "https" and target.port in (443, current.port)


def _same_address(a: IPAddress, b: IPAddress) -> bool:
    def plain(x: IPAddress) -> IPAddress:
        if isinstance(x, ipaddress.IPv6Address):
            if x.ipv4_mapped is not None:
                return x.ipv4_mapped
            if x.scope_id:
                return ipaddress.IPv6Address(x.compressed.split("%", 1)[0])
        return x

    return plain(a) == plain(b)


def _peer(response: httpx.Response) -> IPAddress | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    address = stream.get_extra_info("server_addr")
    if not address:
        return None
    try:
        return ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return None


def _check_peer(
    response: httpx.Response, vetted: list[IPAddress], allow_private: bool, policy: Policy
) -> IPAddress | None:
    peer = _peer(response)
    if peer is None or allow_private:
        return peer
    reason = policy(peer)
    if reason:
        raise OutboundBlocked(f"connected to {reason}")
    if not any(_same_address(peer, v) for v in vetted):
        raise OutboundBlocked(f"connected to {peer}, which is not the vetted address")
    return peer


class _Inflater:
    """Bounded decoding of a gzip/deflate body: never produces more than asked for."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._zlib: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()  # RFC 9110 deflate is zlib-wrapped

    def feed(self, data: bytes, max_length: int) -> bytes:
        if self._zlib is None:
            return data
        try:
            out: bytes = self._zlib.decompress(data, max_length)
        except zlib.error as exc:
            raise OutboundConnectionError(f"malformed compressed body: {exc}") from None
        return out


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    inflater = _Inflater(response.headers.get("content-encoding", "identity"))
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        data = inflater.feed(raw, limit - size + 1)
        if size + len(data) > limit:
            chunks.append(data[: limit - size])
            return b"".join(chunks), True
        chunks.append(data)
        size += len(data)
    return b"".join(chunks), False


def _parse_json(body: bytes) -> Any | None:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _map_httpx_error(exc: httpx.HTTPError) -> OutboundError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return OutboundTimeout(detail)
    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol | httpx.InvalidURL):
        return OutboundError(f"invalid request: {detail}")
    if isinstance(exc, httpx.TransportError):
        return OutboundConnectionError(detail)
    return OutboundError(detail)


def _headers(
    headers: Mapping[str, str] | None, idempotency_key: str | None, content_type: str | None
) -> dict[str, str]:
    merged: dict[str, str] = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if content_type:
        merged["Content-Type"] = content_type
    lower = {k.lower(): k for k in merged}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str) or not _TOKEN.fullmatch(name):
            raise OutboundError(f"invalid header {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise OutboundError(f"invalid value for header {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            continue
        if name.lower() in lower:
            del merged[lower[name.lower()]]
        merged[name] = value
        lower[name.lower()] = name
    if idempotency_key is not None:
        if any(c in idempotency_key for c in "\r\n\0"):
            raise OutboundError("invalid idempotency key")
        for key in [k for k in merged if k.lower() == "idempotency-key"]:
            del merged[key]
        merged["Idempotency-Key"] = idempotency_key
    return merged


async def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any | None = None,
    content: bytes | None = None,
    timeout_s: float = 10.0,
    max_response_bytes: int = 1_000_000,
    allow_private: bool = False,
    idempotency_key: str | None = None,
    max_redirects: int = 3,
    resolver: Resolver | None = None,
    policy: Policy = is_forbidden,
    ssl_context: ssl.SSLContext | None = None,
) -> OutboundResponse:
    """One HTTP request (plus same-host redirects). Returns whatever status the server answered; raises
    OutboundBlocked for a refused destination, OutboundTimeout / OutboundConnectionError for a failed exchange
    (`retryable`), OutboundError for a malformed request.

    `json_body` (None: no JSON body) or `content` is the body. `resolver`, `policy` and `ssl_context` replace the
    system resolver, `guard.is_forbidden` and the default trust store (tests; stricter deployments).
    """
    if json_body is not None and content is not None:
        raise TypeError("pass json_body or content, not both")
    method = method.upper()
    if not _TOKEN.fullmatch(method):
        raise OutboundError(f"invalid method {method!r}")
    target = _parse(url)
    body: bytes | None = content
    content_type = None
    if json_body is not None:
        try:
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise OutboundError(f"invalid JSON body: {exc}") from None
        content_type = "application/json"
    request_headers = _headers(headers, idempotency_key, content_type)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            return await _exchange(
                method,
                target,
                url,
                request_headers,
                body,
                started=started,
                timeout_s=timeout_s,
                max_response_bytes=max_response_bytes,
                allow_private=allow_private,
                max_redirects=max_redirects,
                resolver=resolver,
                policy=policy,
                ssl_context=ssl_context or default_ssl_context(),
            )
    except TimeoutError:
        raise OutboundTimeout(f"timed out: no complete response within {timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        raise _map_httpx_error(exc) from None


async def _exchange(
    method: str,
    target: _Target,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    started: float,
    timeout_s: float,
    max_response_bytes: int,
    allow_private: bool,
    max_redirects: int,
    resolver: Resolver | None,
    policy: Policy,
    ssl_context: ssl.SSLContext,
) -> OutboundResponse:
    async with httpx.AsyncClient(
        verify=ssl_context, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout_s)
    ) as client:
        redirects = 0
        while True:
            addresses = await resolve_allowed(target.host, target.port, allow_private, resolver=resolver, policy=policy)
            response = await _connect_first(client, method, target, addresses, headers, body)
            try:
                peer = _check_peer(response, addresses, allow_private, policy)
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location and redirects < max_redirects:
                    try:
                        next_url = urljoin(url, location)
                        next_target = _parse(next_url)
                    except OutboundError:
                        next_target = None
                    if next_target is not None and _may_follow(target, next_target):
                        redirects += 1
                        url, target = next_url, next_target
                        if response.status_code == 303 and method != "HEAD":
                            method, body = "GET", None
                            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                        continue
                data, truncated = await _read_capped(response, max_response_bytes)
                return OutboundResponse(
                    status_code=response.status_code,
                    headers={name: ", ".join(response.headers.get_list(name)) for name in response.headers},
                    body=data,
                    json=None if truncated else _parse_json(data),
                    url=target.shown,
                    elapsed_ms=round((time.monotonic() - started) * 1000, 1),
                    truncated=truncated,
                    redirects=redirects,
                    peer=str(peer) if peer is not None else None,
                )
            finally:
                await response.aclose()


async def _connect_first(
    client: httpx.AsyncClient,
    method: str,
    target: _Target,
    addresses: list[IPAddress],
    headers: dict[str, str],
    body: bytes | None,
) -> httpx.Response:
    """Send to the vetted addresses in the resolver's order, moving on only when one refuses the connection."""
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and literal_address(target.host) is None:
        extensions["sni_hostname"] = target.host
    last: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            method,
            target.pinned(address),
            headers={**headers, "Host": target.host_header},
            content=body,
            extensions=extensions,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None
    raise last


def is_retryable_status(status_code: int) -> bool:
    return status_code == 429 or 500 <= status_code <= 599


async def send_with_retries(
    method: str,
    url: str,
    *,
    max_attempts: int,
    headers: Mapping[str, str] | None = None,
    json_body: Any | None = None,
    content: bytes | None = None,
    timeout_s: float = 10.0,
    max_response_bytes: int = 1_000_000,
    allow_private: bool = False,
    idempotency_key: str | None = None,
    max_redirects: int = 3,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 30.0,
    max_total_s: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    jitter: Callable[[], float] = random.random,
    resolver: Resolver | None = None,
    policy: Policy = is_forbidden,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[OutboundResponse | None, list[Attempt]]:
    """`send` up to `max_attempts` times. Retried: connection errors, timeouts, 429 and 5xx. Not retried: other
    statuses (2xx, 3xx, 4xx), a refused destination, a malformed request.

    The waits follow `cbworkflow.retry`: the answer's `Retry-After` (or `retry-after-ms`) when it asks for one,
    capped at `backoff_max_s`, else exponential backoff with full jitter, `jitter() * min(backoff_max_s,
    backoff_base_s * 2**(n-1))`. `max_total_s` bounds everything (attempts and waits): no wait is started that
    would end past it, and the last attempt's timeout is cut to what is left. An injected `sleep` counts as the
    delay it was asked for, so tests with an instant `sleep` see the same decisions.
    Returns the last attempt's response (None when it raised) and every attempt. The same idempotency key is sent on
    every attempt, so the receiver can drop duplicates.
    """
    retrying = retry.RetryPolicy(
        max_attempts=max(1, max_attempts),
        base_s=backoff_base_s,
        cap_s=backoff_max_s,
        jitter=retry.Jitter.FULL,
        deadline_s=max_total_s,
        min_attempt_s=0.001,
        retry_after_max_s=backoff_max_s,
    )
    attempts: list[Attempt] = []

    async def once(left: float | None) -> retry.Tried[OutboundResponse | None]:
        began = time.monotonic()
        try:
            response = await send(
                method,
                url,
                headers=headers,
                json_body=json_body,
                content=content,
                timeout_s=timeout_s if left is None else min(timeout_s, max(0.001, left)),
                max_response_bytes=max_response_bytes,
                allow_private=allow_private,
                idempotency_key=idempotency_key,
                max_redirects=max_redirects,
                resolver=resolver,
                policy=policy,
                ssl_context=ssl_context,
            )
        except OutboundError as exc:
            attempts.append(Attempt(None, exc.reason, round((time.monotonic() - began) * 1000, 1)))
            return retry.Tried(None, retry.Next.AFTER_WAIT if exc.retryable else retry.Next.STOP)
        attempts.append(Attempt(response.status_code, None, response.elapsed_ms))
        if not is_retryable_status(response.status_code):
            return retry.Tried(response)
        return retry.Tried(response, retry.Next.AFTER_WAIT, retry.retry_after(response.headers))

    done = await retry.run(once, retrying, sleep=sleep, jitter=jitter)
    return done.last, attempts
