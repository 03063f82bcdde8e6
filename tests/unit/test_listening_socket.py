"""The socket `cbworkflow serve` listens on: its connections must have Nagle's algorithm off.

asyncio sets TCP_NODELAY only on connections whose socket says it is TCP (proto IPPROTO_TCP). A listening socket
made with proto 0 (as `socket.create_server` makes it) hands out connections with Nagle on, and then every small
answer on a kept-alive connection waits about 40 ms for the client's delayed ACK: 60 times slower than it should be.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from cbworkflow.cli.files import CliError
from cbworkflow.cli.serving import listen


def test_connections_accepted_through_asyncio_have_nagle_off() -> None:
    async def accepted_nodelay() -> int:
        sock = listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connection = writer.get_extra_info("socket")
            seen.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_a_port_in_use_is_one_sentence() -> None:
    held = listen("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        with pytest.raises(CliError, match=rf"port {port} on 127.0.0.1 is in use"):
            listen("127.0.0.1", port)
    finally:
        held.close()
