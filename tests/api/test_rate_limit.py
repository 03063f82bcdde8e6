"""429 with Retry-After when a token sends more than CBW_RATE_LIMIT requests a second (after its burst)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cbworkflow.api.rate_limit import RateLimited, RateLimiter
from conftest import ADMIN_TOKEN, free_port, start_server, stop_server


def test_bucket_allows_a_burst_then_refuses_then_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("cbworkflow.api.rate_limit.time.monotonic", lambda: clock[0])
    limiter = RateLimiter(rate=2)
    for _ in range(4):  # burst: two seconds' worth
        limiter.check("tok")
    with pytest.raises(RateLimited) as refused:
        limiter.check("tok")
    assert refused.value.extra["retry_after"] == 1
    limiter.check("other")  # buckets are per token
    clock[0] += 0.5
    limiter.check("tok")  # half a second refills one request
    with pytest.raises(RateLimited):
        limiter.check("tok")


def test_zero_turns_it_off() -> None:
    limiter = RateLimiter(rate=0)
    for _ in range(1000):
        limiter.check("tok")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("limited")
    port = free_port()
    proc = start_server(data_dir, port, data_dir / "server.log", rate_limit=2)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.mark.slow
def test_a_busy_token_gets_429_with_retry_after(limited_server: str) -> None:
    with httpx.Client(base_url=limited_server, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        answers = [client.get("/api/contacts") for _ in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= 4
    refused = [a for a in answers if a.status_code == 429]
    assert refused
    assert int(refused[0].headers["retry-after"]) >= 1
    assert "too many requests" in refused[0].json()["detail"]
    assert httpx.get(f"{limited_server}/healthz").status_code == 200  # health checks are never limited


@pytest.mark.slow
def test_an_import_of_many_rows_is_one_request(limited_server: str) -> None:
    rows = "name,email\n" + "".join(f"Voter {i},v{i}@example.org\n" for i in range(1_200))  # three batches
    with httpx.Client(
        base_url=limited_server, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as client:
        time.sleep(2.5)  # a full bucket: a burst of four
        imported = client.post("/api/contacts/import", content=rows.encode(), headers={"Content-Type": "text/csv"})
        assert imported.status_code == 200, imported.text
        assert imported.json()["created"] == 1_200
        exported = client.get("/api/contacts/export")
        assert exported.status_code == 200
        assert len(exported.text.splitlines()) == 1_201
        assert [client.get("/api/contacts").status_code for _ in range(2)] == [200, 200]  # two of four left


def test_inbound_texts_are_limited_per_client_before_anything_is_read(limited_server: str) -> None:
    """Anyone may post to /api/inbound/sms (the provider signs, it has no token): a client that floods it gets 429
    once its bucket is empty, as a token would."""
    answers = [
        httpx.post(f"{limited_server}/api/inbound/sms", data={"From": "+14155550100", "Body": "hi"}) for _ in range(8)
    ]
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {403, 429}, statuses  # unsigned (no CBW_SMS_AUTH_TOKEN here): refused either way
    limited = [a for a in answers if a.status_code == 429]
    assert limited, statuses
    assert "too many requests for this client" in limited[0].json()["detail"]
    assert int(limited[0].headers["retry-after"]) >= 1
