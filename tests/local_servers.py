"""Real servers on loopback for the outbound tests: an HTTP(S) server that records every request it gets, and an
SMTP server (aiosmtpd) that keeps every message. No mocks of httpx or smtplib: the code under test talks TCP.

`HttpServer(respond)` runs `http.server.ThreadingHTTPServer` in a thread on a free port; `respond(request)` returns
a `Reply` (status, headers, body or chunks, optional delay before answering, or `drop` to close without answering).
Delays wait on an event that `close()` sets, so a test never waits for a slow handler on teardown.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None  # Content-Length for a body given as chunks; None: end the body by closing
    delay_s: float = 0.0
    drop: bool = False  # close the connection without an answer


def json_reply(status: int, text: str, **headers: str) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **headers}, text.encode())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection ends its thread soon after the client goes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            self.client_address[0],
        )
        owner = self.server.owner
        with owner.lock:
            owner.hits.append(request)
        reply = owner.respond(request)
        if reply.delay_s and owner.released.wait(reply.delay_s):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            return
        chunks = [reply.body] if isinstance(reply.body, bytes) else reply.body
        size = len(reply.body) if isinstance(reply.body, bytes) else reply.length
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if size is not None:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            for chunk in chunks:
                if owner.released.is_set():
                    break
                self.wfile.write(chunk)
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True  # the client stopped reading (size cap, timeout): expected

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: HttpServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up are part of the tests


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    def __init__(
        self,
        respond: Callable[[Recorded], Reply] | None = None,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.respond = respond or (lambda request: json_reply(200, '{"ok": true}'))
        self.hits: list[Recorded] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.host = host
        self.sni: list[str | None] = []
        self._server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
        self._server.owner = self
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.sni.append(name)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str = "/", host: str | None = None, scheme: str = "http") -> str:
        shown = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{shown}:{self.port}{path}"

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sequence(*replies: Reply) -> Callable[[Recorded], Reply]:
    """Answer with each reply in turn, then the last one forever."""
    lock = threading.Lock()
    remaining = list(replies)

    def respond(request: Recorded) -> Reply:
        with lock:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return respond


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (openssl CLI), as (cert, key) files."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    files = ["-keyout", str(key), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *files, *subject]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


# ---------------------------------------------------------------------------------------------------- SMTP


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    raw: bytes


class _SmtpHandler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.owner.sessions += 1
        if self.owner.data_replies:
            reply = self.owner.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        raw = envelope.original_content or b""
        self.owner.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(raw), raw)
        )
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a free loopback port. `data_replies`: answers to the next DATA commands (e.g. "451 later"),
    then 250. With `login`, AUTH is required and only that (user, password) is accepted."""

    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        self.received: list[Received] = []
        self.data_replies: list[str] = []
        self.sessions = 0
        self.logins: list[str] = []
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if login is not None:

            def authenticate(
                server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
            ) -> AuthResult:
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (
                        auth_data.login.decode(),
                        auth_data.password.decode(),
                    )
                    == login
                )
                if ok:
                    self.logins.append(auth_data.login.decode())
                return AuthResult(success=ok, handled=False)

            kwargs |= {"authenticator": authenticate, "auth_require_tls": False}
        self._controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drip(chunk: bytes, every_s: float, count: int) -> Iterator[bytes]:
    """A body that trickles: one chunk every `every_s` seconds."""
    for _ in range(count):
        time.sleep(every_s)
        yield chunk


def run(coro: Any) -> Any:
    return asyncio.run(coro)
