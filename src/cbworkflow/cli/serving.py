"""`serve` and `worker`: the socket taken before anything starts, a short banner, then the long-running part.

The port is bound here, not by uvicorn, so a port in use is one line and exit 1 rather than uvicorn's log lines
and exit 3. The banner says what this process will do (which store, which actions run by themselves, whether AI
decisions ask a model), so a wrong setting is seen before the first instance runs on it. With JSON logs it is one
JSON line, so every line the server writes stays one JSON object.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import signal
import socket
import sys
from importlib.metadata import version
from typing import Any

from ..logs import LogFormat
from ..settings import Settings
from .files import CliError


def log_format(settings: Settings, stream: Any = None) -> LogFormat:
    """JSON lines for a log collector; text for a person at a terminal, unless CBW_LOG_FORMAT says otherwise."""
    stream = stream if stream is not None else sys.stderr
    if "log_format" in settings.model_fields_set or not stream.isatty():
        return settings.log_format
    return "text"


def masked(url: str) -> str:
    """A store URL with its password replaced by `***`."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def _executors(settings: Settings) -> str:
    from ..executors import parse_executors

    mapping = parse_executors(settings.executors)
    if not mapping:
        return "none (CBW_EXECUTORS is empty): every action waits for a person"
    return ", ".join(f"{action}={kind}" for action, kind in mapping.items())


def _ai(settings: Settings) -> str:
    if settings.anthropic_api_key:
        return f"live (model {settings.ai_model})"
    return "off (no ANTHROPIC_API_KEY): fallbacks are taken, or a person decides"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def banner(settings: Settings, command: str, rows: list[tuple[str, str]], fmt: LogFormat) -> None:
    """What this process will do, on stderr before it starts: with JSON logs, one JSON line like every other line
    (its fields named); otherwise a block of its own, a panel at a terminal."""
    lines = [
        ("store", masked(settings.store_url)),
        ("executors", _executors(settings)),
        ("AI decisions", _ai(settings)),
        *rows,
    ]
    title = f"cbworkflow {version('cbworkflow')} {command}"
    if fmt == "json":
        from ..logs import JsonFormatter

        record = logging.LogRecord("cbworkflow", logging.INFO, __file__, 0, title, None, None)
        for label, value in lines:
            setattr(record, label.lower().replace(" ", "_"), value)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
        return
    width = max(len(label) for label, _ in lines)
    body = "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in lines)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.panel import Panel
        from rich.text import Text

        Console(file=sys.stderr).print(Panel(Text(body), title=title, title_align="left", expand=False))
    else:
        indented = "\n".join(f"  {line}" for line in body.splitlines())
        print(f"{title}\n{indented}\n", file=sys.stderr, flush=True)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or one sentence saying why there is none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not socket.create_server's 0: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket says it is TCP, and with Nagle on, every small answer on a kept-alive connection waits ~40 ms for the
    # client's delayed ACK between its header and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        return sock
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is in use; stop what holds it or choose another --port") from None
        reason = exc.strerror or str(exc)
        raise CliError(f"cannot listen on {host} port {port} ({reason})") from None


# The server stack: uvloop's event loop (C). HTTP stays h11: httptools measured no faster for this service (one
# serve, 32 connections: 351-363 transitions/s against h11's 374-413) and answers a method it does not know with a
# plain-text 400 before the application sees it, where h11 lets the API answer 405 with a `detail`. The benchmarks
# run their bare baseline app with these same options, so a comparison is between applications only.
SERVER_OPTIONS: dict[str, Any] = {"loop": "uvloop", "http": "h11"}


def serve(settings: Settings, host: str, port: int, *, run_worker: bool) -> int:
    import uvicorn

    from .. import logs
    from ..api.app import create_app

    sock = listen(host, port)
    try:
        fmt = log_format(settings)
        logs.configure(settings.log_level, fmt)
        worker = "in this process" if run_worker else "not in this process (--no-worker)"
        banner(settings, "serve", [("worker", worker), ("API docs", f"http://{_url_host(host)}:{port}/docs")], fmt)
        app = create_app(settings, run_worker=run_worker)
        # uvicorn's loggers go through our handler (log_config=None); api/request_log.py writes the access lines.
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            log_config=None,
            access_log=False,
            **SERVER_OPTIONS,
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CliError("the server did not start (the log above says why)")
    return 0


def worker(settings: Settings) -> int:
    """The worker alone, until SIGTERM or SIGINT (then it finishes the work it started and exits 0)."""
    from .. import logs
    from ..wiring import build_services, make_worker

    fmt = log_format(settings)
    logs.configure(settings.log_level, fmt)
    banner(settings, "worker", [], fmt)

    async def run() -> int:
        services = await build_services(settings)
        await services.outbox.start()
        try:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await make_worker(services).run(stop)
            return 0
        finally:
            await services.outbox.stop()
            await services.store.close()

    return asyncio.run(run())
