"""`cbworkflow serve` and `worker` as real processes: the banner before they start, the admin token set apart from
the log lines, and text logs at a terminal (a real pseudo-terminal), JSON lines otherwise."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from cbworkflow.cli.serving import log_format, masked
from cbworkflow.settings import Settings
from conftest import CBWORKFLOW, TLS, PostgresDatabase
from local_servers import free_port

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def environment(**settings: str) -> dict[str, str]:
    dropped = {"ANTHROPIC_API_KEY", "COLUMNS", "LINES"}  # the terminal's own size counts, not the test runner's
    keep = {k: v for k, v in os.environ.items() if not k.startswith("CBW_") and k not in dropped}
    return keep | {"CBW_LOG_LEVEL": "INFO", **settings}


def wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, verify=TLS).status_code == 200
    except httpx.HTTPError:
        return False


def run_serve(tmp_path: Path, **settings: str) -> tuple[str, Path, int]:
    """A real `serve` on a free port, until /healthz and /docs answer; then SIGTERM. Its stderr, data dir, port."""
    port = free_port()
    data = tmp_path / "data"
    env = environment(
        CBW_DATA_DIR=str(data), CBW_EXECUTORS="mail=webhook", ANTHROPIC_API_KEY="sk-ant-unused", CBW_AI_MODEL="m-1"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(CBWORKFLOW), "serve", "--port", str(port), "--no-worker"],
            env=env | settings,
            cwd=tmp_path,
            stderr=err,
        )
    try:
        wait_for(lambda: healthy(port) or proc.poll() is not None)
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
    finally:
        code = stop(proc)
    assert code in (0, -signal.SIGTERM)  # uvicorn shuts down, then ends by the signal it caught
    text = log.read_text()
    assert "Application shutdown complete." in text
    return text, data, port


def token_block(data: Path) -> str:
    """The first start's token, between blank lines, as the file it was also written to holds it."""
    token = (data / "admin-token").read_text().strip()
    assert token.startswith("cbw_")
    return (
        f"\n\ncbworkflow: created tenant 'default' and a superadmin token (shown once; also kept in "
        f"{data / 'admin-token'}):\n\n    {token}\n\n"
    )


def test_serve_with_json_logs_starts_with_the_banner_as_a_json_line(tmp_path: Path) -> None:
    text, data, port = run_serve(tmp_path)
    first = json.loads(text.splitlines()[0])
    assert first["message"] == f"cbworkflow {version('cbworkflow')} serve"
    assert first["level"] == "INFO"
    assert {k: first[k] for k in ("store", "executors", "ai_decisions", "worker", "api_docs")} == {
        "store": f"sqlite:///{data / 'cbworkflow.db'}",
        "executors": "mail=webhook",
        "ai_decisions": "live (model m-1)",
        "worker": "not in this process (--no-worker)",
        "api_docs": f"http://127.0.0.1:{port}/docs",
    }
    block = token_block(data)
    assert block in text
    for line in text.replace(block, "\n").splitlines():  # apart from the token, every line is one JSON object
        assert set(json.loads(line)) >= {"ts", "level", "logger", "message"}, line


def test_serve_with_text_logs_shows_the_banner_as_a_block(tmp_path: Path) -> None:
    text, data, port = run_serve(tmp_path, CBW_LOG_FORMAT="text")
    banner, rest = text.split("\n\n", 1)
    assert banner.splitlines() == [
        f"cbworkflow {version('cbworkflow')} serve",
        f"  store:        sqlite:///{data / 'cbworkflow.db'}",
        "  executors:    mail=webhook",
        "  AI decisions: live (model m-1)",
        "  worker:       not in this process (--no-worker)",
        f"  API docs:     http://127.0.0.1:{port}/docs",
    ]
    assert token_block(data) in text
    assert re.search(r"^\S+ INFO +uvicorn\S* Application startup complete\.$", rest, re.MULTILINE), rest


def _read_until(fd: int, proc: subprocess.Popen[bytes], needle: str, timeout: float = 30.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in ANSI.sub("", seen.decode(errors="replace")):
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        assert proc.poll() is None, seen.decode(errors="replace")
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        seen += chunk
    return ANSI.sub("", seen.decode(errors="replace"))


def test_worker_at_a_terminal_masks_the_password_and_logs_text(tmp_path: Path) -> None:
    database = PostgresDatabase()
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    url = database.url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    try:
        proc = subprocess.Popen(
            [str(CBWORKFLOW), "worker"],
            env=environment(CBW_DATABASE_URL=url, CBW_WORKER_POLL_INTERVAL="0.2", TERM="xterm"),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        try:
            seen = _read_until(leader, proc, " started")
        finally:
            assert stop(proc) == 0
    finally:
        os.close(leader)
        database.drop()
    assert "hunter2" not in seen
    assert f"cbworkflow {version('cbworkflow')} worker" in seen
    assert f"store:        postgresql://postgres:***@{url.split('@', 1)[1]}" in seen
    assert "executors:    none (CBW_EXECUTORS is empty): every action waits for a person" in seen
    assert "AI decisions: off (no ANTHROPIC_API_KEY): fallbacks are taken, or a person decides" in seen
    assert "╭" in seen  # a panel at a terminal
    started = next(line for line in seen.splitlines() if " started" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT\S+ INFO +cbworkflow\S* worker \S+ started", started), started


def test_log_format_follows_the_terminal_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CBW_LOG_FORMAT", raising=False)
    monkeypatch.chdir(tmp_path)
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, (tmp_path / "file").open("w") as plain:
        assert log_format(Settings(), terminal) == "text"
        assert log_format(Settings(), plain) == "json"
        monkeypatch.setenv("CBW_LOG_FORMAT", "json")
        assert log_format(Settings(), terminal) == "json"
        monkeypatch.setenv("CBW_LOG_FORMAT", "text")
        assert log_format(Settings(), plain) == "text"
    os.close(leader)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://cbw:s3cr3t@db.internal:5432/cbw", "postgresql://cbw:***@db.internal:5432/cbw"),
        ("postgresql+psycopg://cbw:p%40ss@db/cbw", "postgresql+psycopg://cbw:***@db/cbw"),
        ("postgresql://cbw@db/cbw", "postgresql://cbw@db/cbw"),
        ("sqlite:///data/cbworkflow.db", "sqlite:///data/cbworkflow.db"),
    ],
)
def test_masked(url: str, shown: str) -> None:
    assert masked(url) == shown
