"""Structured logs: one JSON object per line, an access line per request with its id, no secrets, no query strings.

Each test reads the log of a real `cbworkflow serve` process (stdout and stderr go to one file), after stopping
it so every line is written.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbworkflow.api.app import create_app
from cbworkflow.logs import JsonFormatter, TextFormatter
from cbworkflow.settings import SettingsError, load_settings
from conftest import ADMIN_TOKEN, free_port, start_server, stop_server

SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class LoggedServer:
    def __init__(self, folder: Path, env: str = "") -> None:
        self.folder = folder
        self.log = folder / "server.log"
        if env:
            (folder / ".env").write_text(env)  # start_server passes no CBW_ setting of ours: the .env does
        port = free_port()
        self.proc = start_server(folder, port, self.log, workdir=folder)
        self.base_url = f"http://127.0.0.1:{port}"

    def client(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def stop(self) -> str:
        stop_server(self.proc)
        return self.log.read_text()


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[LoggedServer]:
    server = LoggedServer(tmp_path)
    yield server
    stop_server(server.proc)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines()]  # every line, not only ours, is one JSON object
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line), line
        assert datetime.fromisoformat(line["ts"]).utcoffset() == UTC.utcoffset(None)
    return lines


def access_lines(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["request_id"]: line for line in lines if line["logger"] == "cbworkflow.access"}


def test_access_lines_are_json_with_the_request_id(logged: LoggedServer) -> None:
    with logged.client() as client:
        created = client.post("/api/tokens", json={"role": "staff", "name": "desk"})
        assert created.status_code == 201
        staff_secret = created.json()["token"]
        contact = client.post("/api/contacts", json={"name": "Ada Lovelace", "email": "ada@example.org"})
        assert contact.status_code == 201
        given = client.get(
            "/api/contacts/search", params={"q": "Lovelace"}, headers={"X-Request-ID": "client-chosen.id_1"}
        )
        missing = client.get(f"/api/contacts/{contact.json()['id']}/timeline")
        not_found = client.get("/api/contacts/nosuchcontact")
    with logged.client(staff_secret) as staff:
        as_staff = staff.get("/api/contacts", params={"county": "Kent"})
    with logged.client(None) as anonymous:
        refused = anonymous.get("/api/contacts", headers={"Authorization": "Bearer not-a-real-token-987654"})
    assert given.headers["x-request-id"] == "client-chosen.id_1"
    generated = missing.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert not_found.status_code == 404
    assert not_found.headers["x-request-id"]  # errors carry it too
    assert refused.status_code == 401
    assert refused.headers["x-request-id"]

    text = logged.stop()
    lines = json_lines(text)
    access = access_lines(lines)

    chosen = access["client-chosen.id_1"]
    assert chosen["method"] == "GET"
    assert chosen["path"] == "/api/contacts/search"  # without "?q=Lovelace": search terms are personal data
    assert chosen["route"] == "/api/contacts/search"
    assert chosen["status"] == 200
    assert isinstance(chosen["duration_ms"], float | int)
    assert chosen["duration_ms"] >= 0
    assert chosen["tenant"] == "default"
    assert chosen["token_id"]
    assert chosen["level"] == "INFO"
    assert chosen["client"] == "127.0.0.1"

    assert access[generated]["route"] == "/api/contacts/{contact_id}/timeline"
    assert access[not_found.headers["x-request-id"]]["status"] == 404
    assert access[as_staff.headers["x-request-id"]]["token_id"] == created.json()["id"]
    assert "tenant" not in access[refused.headers["x-request-id"]]  # never authenticated

    # No secret, query string or body reaches the log.
    for secret in (ADMIN_TOKEN, staff_secret, "not-a-real-token-987654", "Lovelace", "ada@example.org", "Kent"):
        assert secret not in text
    assert "?" not in "".join(line.get("path", "") for line in lines)
    assert not any("authorization" in json.dumps(line).lower() for line in lines)

    # Probes and scrapes that succeed are DEBUG, below the default level: start_server's /healthz left no line.
    assert not [line for line in lines if line.get("route") == "/healthz"]
    # uvicorn's own lines go through the same formatter; its access log is off (ours replaces it).
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)


@pytest.mark.parametrize(
    "bad",
    ["x" * 129, "has spaces in it", "semi;colon", "slash/id", 'quote"d', "", "ünïcode"],
    ids=["too-long", "spaces", "semicolon", "slash", "quote", "empty", "non-ascii"],
)
def test_an_unusable_request_id_is_replaced(logged: LoggedServer, bad: str) -> None:
    with logged.client() as client:
        answer = client.get("/api/contacts", headers=[(b"X-Request-ID", bad.encode("utf-8"))])
    assert answer.status_code == 200
    replaced = answer.headers["x-request-id"]
    assert replaced != bad
    assert SANE.fullmatch(replaced)
    lines = json_lines(logged.stop())
    assert access_lines(lines)[replaced]["status"] == 200
    if bad:
        assert not any(bad in json.dumps(line, ensure_ascii=False) for line in lines)


def test_error_answers_made_by_middleware_carry_the_id(logged: LoggedServer) -> None:
    with logged.client() as client:
        too_big = client.post("/api/contacts", content=b"[" + b"0," * 700_000 + b"0]")
        bad_json = client.post("/api/contacts", content=b'{"name": NaN}', headers={"X-Request-ID": "r-400"})
    assert too_big.status_code == 413
    assert bad_json.status_code == 400
    assert bad_json.headers["x-request-id"] == "r-400"
    access = access_lines(json_lines(logged.stop()))
    assert access[too_big.headers["x-request-id"]]["status"] == 413
    assert access[too_big.headers["x-request-id"]]["route"] == "/api/contacts"
    assert access["r-400"]["status"] == 400


def test_text_format_and_level(tmp_path: Path) -> None:
    server = LoggedServer(tmp_path, "CBW_LOG_FORMAT=text\nCBW_LOG_LEVEL=debug\n")
    try:
        with server.client() as client:
            answer = client.get("/api/contacts", headers={"X-Request-ID": "text-mode-1"})
    finally:
        text = server.stop()
    assert answer.status_code == 200
    ours = [line for line in text.splitlines() if "text-mode-1" in line]
    assert len(ours) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(ours[0])
    assert "cbworkflow.access" in ours[0]
    assert "GET /api/contacts 200" in ours[0]
    assert "route=/api/contacts" in ours[0]
    assert "status=200" in ours[0]
    assert ADMIN_TOKEN not in text
    assert "route=/healthz" in text  # DEBUG: the probes show


def test_log_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CBW_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="CBW_LOG_FORMAT"):
        load_settings()
    monkeypatch.setenv("CBW_LOG_FORMAT", "JSON")
    monkeypatch.setenv("CBW_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError, match="CBW_LOG_LEVEL"):
        load_settings()
    monkeypatch.setenv("CBW_LOG_LEVEL", "warning")
    settings = load_settings()
    assert (settings.log_format, settings.log_level) == ("json", "WARNING")


# ---------------------------------------------------------------------------------------------------- in process
@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the JSON formatter writes for the `cbworkflow` loggers (as the server's handler would)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cbworkflow")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_an_unexpected_error_is_logged_with_its_traceback_and_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: io.StringIO
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, database_url=None)
    app = create_app(settings, load_example=False)

    async def boom() -> None:
        raise RuntimeError("something broke\nover two lines")

    app.add_api_route("/boom", boom, include_in_schema=False)  # a test route: no operation id needed

    async def run() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get("/boom?secret=1", headers={"X-Request-ID": "boom-1"})

    answer = asyncio.run(run())
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "boom-1"
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == "boom-1"
    assert error["message"] == "unexpected error on GET /boom"
    assert "Traceback (most recent call last)" in error["exc_info"]
    assert "RuntimeError: something broke\nover two lines" in error["exc_info"]
    access = next(line for line in lines if line["logger"] == "cbworkflow.access")
    assert (access["request_id"], access["status"], access["route"]) == ("boom-1", 500, "/boom")
    assert access["level"] == "WARNING"
    assert "secret=1" not in captured.getvalue()


def test_formatters_keep_extra_fields_and_cannot_be_split() -> None:
    record = logging.LogRecord("cbworkflow.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.__dict__.update({"path": "/a\nfake line", "level": "not overwritten", "count": 3})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "hello world"
    assert parsed["level"] == "INFO"
    assert (parsed["path"], parsed["count"]) == ("/a\nfake line", 3)
    text = TextFormatter().format(record)
    assert "\n" not in text
    assert 'path="/a\\nfake line"' in text
    assert "count=3" in text
