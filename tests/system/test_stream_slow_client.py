"""A client that stops reading `/api/stream` is cut off once a send has waited `CBW_STREAM_SEND_TIMEOUT_S`, holds
no more than a page of events in the server meanwhile, and does not keep other requests from being answered.

The latencies of other requests with and without the stalled client are printed (run with `-s` to see them); they
are measured here, not asserted: timings belong in `bench/`."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cbworkflow.ids import new_id
from cbworkflow.models.events import Event, EventType
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import ADMIN_TOKEN, free_port, start_server, stop_server

pytestmark = pytest.mark.slow

EVENTS = 1_200
NOTE = "x" * 9_000  # 1,200 of them: about 11 MB, more than every buffer between the server and a stalled reader


async def seed(data_dir: Path) -> None:
    services = await build_services(Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN))
    try:
        await bootstrap(services, load_example=False)
        now = datetime.now(UTC)
        made = [
            Event(
                id=new_id(),
                type=EventType.USER_NOTE,
                timestamp=now,
                actor="seed",
                message=NOTE,
                contact_id="c-slow",
                instance_id="i-slow",
            )
            for _ in range(EVENTS)
        ]
        for start in range(0, EVENTS, 300):
            await services.store.write(
                SYSTEM.tenant, lambda tx, start=start: tx.append_events(made[start : start + 300])
            )
    finally:
        await services.store.close()


def p99_ms(client: httpx.Client, n: int = 300) -> float:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        assert client.get("/api/contacts", params={"limit": 10}).status_code == 200
        times.append((time.perf_counter() - began) * 1000)
    return statistics.quantiles(times, n=100)[98]


def stalled_stream(port: int) -> socket.socket:
    """A stream request whose client then reads nothing, with a small receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    request = (
        f"GET /api/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    assert sock.recv(12).startswith(b"HTTP/1.1 200")
    return sock


def read_to_end(sock: socket.socket, limit_s: float) -> tuple[int, bool]:
    """Bytes left to read and whether the server closed the connection within `limit_s`."""
    sock.settimeout(limit_s)
    total = 0
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return total, True
            total += len(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return total, False


def test_a_stalled_stream_client_is_cut_off_and_slows_nobody(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(seed(data_dir))
    port = free_port()
    proc = start_server(
        data_dir, port, tmp_path / "server.log", env={"CBW_STREAM_SEND_TIMEOUT_S": "2", "CBW_LOG_LEVEL": "warning"}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
            quiet = p99_ms(c)
            sock = stalled_stream(port)
            try:
                busy = p99_ms(c)  # while the server's send to the stalled client is blocked
                time.sleep(3)  # past the send timeout
                left, closed = read_to_end(sock, limit_s=20)
            finally:
                sock.close()
            print(f"\nother requests' p99: {quiet:.1f} ms alone, {busy:.1f} ms beside a stalled stream client")
            assert closed, "the server kept a client that read nothing for longer than the send timeout"
            assert left < EVENTS * len(NOTE) / 2, f"the stalled client was sent {left} bytes: most of the stream"
            assert c.get("/healthz").status_code == 200
    finally:
        stop_server(proc)
