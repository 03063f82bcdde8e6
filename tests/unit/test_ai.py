"""AI decisions through the real `anthropic` SDK, against the local fake Messages API (tests/fake_anthropic.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.runtime.ai import NO_KEY_ERROR, REASON_MAX_CHARS, TOOL_NAME, AIDecider, AIDecision
from cbworkflow.settings import load_settings
from fake_anthropic import (
    FakeAnthropic,
    Reply,
    api_error,
    cut_off,
    overloaded,
    rate_limited,
    refusal,
    server_error,
    slow,
    text_only,
    tool_input,
    tool_use,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ant-test-0123456789"
MODEL = "claude-test-model"
OUTCOMES = ["yes", "no"]


class Sleeps:
    """An injectable `sleep` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="module", autouse=True)
def _one_tls_context() -> Iterator[None]:
    """Each decider makes an SDK client, which loads the system's CA bundle (0.05-0.15 s, though these tests only
    speak plain HTTP): load it once for the module, to keep the file fast."""
    import httpcore2

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpcore2, "default_ssl_context", functools.cache(httpcore2.default_ssl_context))
        yield


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def decider(base_url: str, sleeps: Sleeps, **options: Any) -> AIDecider:
    settings: dict[str, Any] = {"api_key": KEY, "model": MODEL, "timeout_s": 5.0, "jitter": lambda: 0.0}
    return AIDecider(base_url=base_url, sleep=sleeps, **(settings | options))


def decide(
    ai: AIDecider, prompt: str = "Did they say yes?", outcomes: Sequence[str] = OUTCOMES, model: str | None = None
) -> AIDecision:
    async def go() -> AIDecision:
        try:
            return await ai.decide(prompt, outcomes, model=model)
        finally:
            await ai.close()

    return asyncio.run(go())


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sys, cbworkflow.runtime.ai; print(sorted(m for m in sys.modules if m.split('.')[0] == 'anthropic'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_an_allowed_outcome_with_its_reason_tokens_and_the_request_shape(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(tool_use("interested", " They asked how to volunteer. ", input_tokens=321, output_tokens=45))
    prompt = "Door notes for Ada: 'keen, wants to help on weekends'. Route her."
    outcomes = ["interested", "not_interested", "follow_up"]
    result = decide(decider(fake.base_url, sleeps), prompt, outcomes)

    assert result.outcome == "interested"
    assert result.ok
    assert result.reason == "They asked how to volunteer."
    assert (result.model, result.attempts, result.error) == (MODEL, 1, None)
    assert (result.input_tokens, result.output_tokens) == (321, 45)
    assert result.latency_ms >= 0
    assert result.event_data() == {
        "outcome": "interested",
        "model": MODEL,
        "reason": "They asked how to volunteer.",
        "latency_ms": result.latency_ms,
        "input_tokens": 321,
        "output_tokens": 45,
        "attempts": 1,
        "error": None,
    }
    assert sleeps.waits == []

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.api_key == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"  # how SDK 2.x sends an API key
    assert "anthropic-version" in request.headers
    body = request.body
    assert body["model"] == MODEL
    assert body["messages"] == [{"role": "user", "content": prompt}]
    assert "campaign-outreach" in body["system"]
    assert "interested, not_interested, follow_up" in body["system"]
    assert body["tools"] == [
        {
            "name": TOOL_NAME,
            "description": body["tools"][0]["description"],
            "input_schema": {
                "type": "object",
                "properties": {
                    "outcome": {"type": "string", "enum": outcomes},
                    "reason": {"type": "string"},
                },
                "required": ["outcome", "reason"],
            },
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert body["max_tokens"] == 1024
    assert request.headers["x-stainless-retry-count"] == "0"  # the SDK's own retries are off


def test_the_model_comes_from_settings_unless_the_rule_names_one(
    fake: FakeAnthropic, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("CBW_AI_MODEL", "claude-from-settings")
    monkeypatch.setenv("CBW_AI_BASE_URL", fake.base_url)
    monkeypatch.setenv("CBW_AI_TIMEOUT_S", "7.5")
    ai = AIDecider.from_settings(load_settings(), sleep=sleeps)
    assert (ai.configured, ai.model, ai.base_url, ai.timeout_s) == (True, "claude-from-settings", fake.base_url, 7.5)

    async def go() -> list[AIDecision]:
        try:
            return [await ai.decide("a", OUTCOMES), await ai.decide("b", OUTCOMES, model="claude-from-the-rule")]
        finally:
            await ai.close()

    first, second = asyncio.run(go())
    assert (first.model, second.model) == ("claude-from-settings", "claude-from-the-rule")
    assert [r.body["model"] for r in fake.requests] == ["claude-from-settings", "claude-from-the-rule"]
    assert first.outcome == second.outcome == "yes"  # no marker: the fake takes the first outcome
    assert first.reason == "default"


def test_the_reason_is_capped(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(tool_use("no", "because " * 400))
    result = decide(decider(fake.base_url, sleeps))
    assert result.outcome == "no"
    assert len(result.reason) == REASON_MAX_CHARS


def test_retry_after_and_retry_after_ms_are_honoured(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(rate_limited(retry_after=2), rate_limited(retry_after=9, retry_after_ms=1500), tool_use("yes"))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts, result.error) == ("yes", 3, None)
    assert sleeps.waits == [2.0, 1.5]  # retry-after-ms wins over retry-after
    assert (result.input_tokens, result.output_tokens) == (25, 10)  # errors cost no tokens
    assert [r.api_key for r in fake.requests] == [KEY] * 3


def test_rate_limited_every_time(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(*[rate_limited(retry_after=1)] * 3)
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts) == (None, 3)
    assert result.error == "rate limited (429) 3 times"
    assert sleeps.waits == [1.0, 1.0]
    assert fake.pending == 0


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (server_error(500), "server error (500)"),
        (server_error(502), "bad gateway (502)"),
        (server_error(503), "service unavailable (503)"),
        (overloaded(), "overloaded (529)"),
        (api_error(408), "request timeout (408)"),
    ],
)
def test_server_errors_are_retried_with_exponential_backoff(
    fake: FakeAnthropic, sleeps: Sleeps, failure: Reply, words: str
) -> None:
    fake.script(failure, failure, tool_use("no"))
    result = decide(decider(fake.base_url, sleeps, backoff_base_s=0.25))
    assert (result.outcome, result.attempts, result.error) == ("no", 3, None)
    assert sleeps.waits == [0.125, 0.25]  # 0.25 s * 2**n, halved by the (pinned) jitter

    fake.reset()
    fake.script(failure, failure, failure)
    sleeps.waits.clear()
    result = decide(decider(fake.base_url, sleeps, backoff_base_s=0.25, jitter=lambda: 1.0))
    assert (result.outcome, result.attempts, result.error) == (None, 3, f"{words} 3 times")
    assert sleeps.waits == [0.25, 0.5]


def test_backoff_is_capped_and_different_errors_are_listed_in_order(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(server_error(500), overloaded(retry_after=3), server_error(500), server_error(503))
    result = decide(decider(fake.base_url, sleeps, max_attempts=4, backoff_base_s=4, backoff_max_s=5))
    assert result.outcome is None
    assert result.attempts == 4
    assert (
        result.error
        == "server error (500), then overloaded (529), then server error (500), then service unavailable (503)"
    )
    assert sleeps.waits == [2.0, 3.0, 2.5]  # 4 s halved; the server's 3 s; min(5, 16 s) halved


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "bad request (400): fake invalid_request_error"),
        (403, "permission denied (403): fake permission_error"),
        (404, "not found (404): model: claude-test-model"),
        (413, "request too large (413): fake request_too_large"),
        (422, "unprocessable request (422): fake invalid_request_error"),
    ],
)
def test_client_errors_are_not_retried(fake: FakeAnthropic, sleeps: Sleeps, status: int, error: str) -> None:
    fake.script(api_error(status, "model: claude-test-model" if status == 404 else ""))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts, result.error) == (None, 1, error)
    assert sleeps.waits == []


def test_a_wrong_key_is_refused_once(sleeps: Sleeps) -> None:
    with FakeAnthropic(api_key="sk-the-right-one") as fake:
        result = decide(decider(fake.base_url, sleeps))
        assert (result.outcome, result.attempts) == (None, 1)
        assert result.error == "the API key was refused (401): invalid x-api-key"
        assert fake.requests[0].api_key == KEY


def test_x_should_retry_overrides_the_status(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(api_error(500, headers={"x-should-retry": "false"}))
    assert decide(decider(fake.base_url, sleeps)).attempts == 1
    fake.script(api_error(400, "try again", headers={"x-should-retry": "true"}), tool_use("yes"))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts) == ("yes", 2)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (refusal(), "the model refused"),
        (cut_off("yes"), "the answer was cut off (max_tokens)"),
        (text_only(), "the model did not call the tool"),
        (tool_use("maybe"), "the model chose 'maybe', which is not one of yes, no"),
        (tool_use("Yes"), "the model chose 'Yes', which is not one of yes, no"),
        (tool_use("yes "), "the model chose 'yes ', which is not one of yes, no"),
        (
            tool_input({"outcome": ["yes"], "reason": "x"}),
            "the model chose ['yes'] (not a string), which is not one of yes, no",
        ),
        (tool_input("yes"), "the model's tool input is not an object ('yes')"),
        (tool_input({"reason": "no idea"}), "the model's answer has no outcome"),
        (tool_use("yes", tool="another_tool"), "the model called an unknown tool 'another_tool'"),
    ],
)
def test_answers_that_are_not_exactly_one_allowed_outcome_are_errors(
    fake: FakeAnthropic, sleeps: Sleeps, answer: Reply, error: str
) -> None:
    fake.script(answer)
    result = decide(decider(fake.base_url, sleeps, max_attempts=1))
    assert (result.outcome, result.reason, result.attempts, result.error) == (None, "", 1, error)
    assert (result.input_tokens, result.output_tokens) == (25, 10)  # a wrong answer still costs its tokens
    assert not result.ok


def test_a_wrong_answer_is_retried_at_once_and_counted(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(refusal(), tool_use("maybe"), tool_use("no", "they said no twice"))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.reason, result.attempts) == ("no", "they said no twice", 3)
    assert (result.input_tokens, result.output_tokens) == (75, 30)
    assert sleeps.waits == []  # nothing to wait for

    fake.script(*[tool_use("maybe")] * 3)
    result = decide(decider(fake.base_url, sleeps))
    assert result.error == "the model chose 'maybe', which is not one of yes, no (3 times)"
    fake.script(*[refusal()] * 3)
    assert decide(decider(fake.base_url, sleeps)).error == "the model refused 3 times"


def test_a_cut_off_answer_is_retried_with_more_tokens(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(cut_off("yes"), cut_off(), tool_use("yes"))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts) == ("yes", 3)
    assert [r.body["max_tokens"] for r in fake.requests] == [1024, 2048, 4096]


def test_the_deadline_covers_a_slow_answer(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(slow(60, tool_use("yes")))  # answered only if the request outlives its deadline (or at teardown)
    result = decide(decider(fake.base_url, sleeps, timeout_s=0.5))
    assert (result.outcome, result.attempts, result.error) == (None, 1, "timed out after 0.5 s")
    assert result.latency_ms > 0
    assert 0 < float(fake.requests[0].headers["x-stainless-read-timeout"]) <= 0.5  # told its deadline


class ServerTime:
    """A clock on which each request the fake received took `per_request` seconds and each sleep what it asked:
    the time a decision sees, without waiting for it (nor for the SDK's import, which takes seconds at first)."""

    def __init__(self, fake: FakeAnthropic, sleeps: Sleeps, per_request: float) -> None:
        self.fake, self.sleeps, self.per_request = fake, sleeps, per_request

    def __call__(self) -> float:
        return self.per_request * len(self.fake.requests) + sum(self.sleeps.waits)


def test_the_deadline_covers_all_attempts_together(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(server_error(500), slow(60, tool_use("yes")))
    clock = ServerTime(fake, sleeps, per_request=0.4)
    ai = decider(fake.base_url, sleeps, timeout_s=0.7, backoff_base_s=0.01, min_attempt_s=0.05, clock=clock)
    result = decide(ai)
    assert (result.outcome, result.attempts) == (None, 2)
    assert result.error == "server error (500), then timed out after 0.7 s"
    assert sleeps.waits == [0.005]
    # The second attempt only had what was left of the 0.7 s (0.4 s for the first, 0.005 s waited), and the
    # request was told so.
    assert float(fake.requests[1].headers["x-stainless-read-timeout"]) == pytest.approx(0.7 - 0.4 - 0.005)


def test_a_retry_after_past_the_deadline_gives_up_at_once(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    fake.script(rate_limited(retry_after=60))
    result = decide(decider(fake.base_url, sleeps))
    assert (result.outcome, result.attempts) == (None, 1)
    assert result.error == "rate limited (429); the API asked to wait 60 s, past the 5 s deadline"
    assert sleeps.waits == []


def test_a_connection_error_is_retried_then_reported(sleeps: Sleeps) -> None:
    with FakeAnthropic() as fake:
        url = fake.base_url  # a port that was just listening, and no longer is
    result = decide(decider(url, sleeps, backoff_base_s=0.1))
    assert (result.outcome, result.attempts) == (None, 3)
    assert result.error is not None
    assert result.error.startswith("could not connect to the API")
    assert result.error.endswith("3 times") or "(3 times)" in result.error
    assert sleeps.waits == [0.05, 0.1]
    assert (result.input_tokens, result.output_tokens) == (0, 0)


def test_no_api_key_answers_at_once_without_a_request(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    ai = decider(fake.base_url, sleeps, api_key=None)
    assert not ai.configured
    result = decide(ai)
    assert result == AIDecision(outcome=None, reason="", model=MODEL, attempts=0, error=NO_KEY_ERROR)
    assert result.error == "no ANTHROPIC_API_KEY configured"
    assert fake.requests == []
    assert ai._client is None  # not even a client was made
    assert decide(decider(fake.base_url, sleeps, api_key="")).error == NO_KEY_ERROR


def test_concurrent_decisions_share_one_client(fake: FakeAnthropic, sleeps: Sleeps) -> None:
    ai = decider(fake.base_url, sleeps)
    outcomes = ["a", "b", "c", "d"]

    async def go() -> list[AIDecision]:
        try:
            await ai.prepare()
            client = ai._client
            results = await asyncio.gather(*(ai.decide(f"[fake:outcome={o}]", outcomes) for o in outcomes))
            assert ai._client is client
            return list(results)
        finally:
            await ai.close()

    assert [r.outcome for r in asyncio.run(go())] == outcomes
    assert len(fake.requests) == 4


def test_the_standalone_fake_follows_the_markers(sleeps: Sleeps) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_anthropic.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake Anthropic API on http://127.0.0.1:")
        url = line.split(" on ")[1].strip()
        retrying = decider(url, sleeps)
        once = decider(url, sleeps, max_attempts=1, timeout_s=20)  # roomy: a loaded machine must not time it out
        hasty = decider(url, sleeps, max_attempts=1, timeout_s=0.3)  # for the slow answer only
        outcomes = ["interested", "not_interested", "follow_up"]

        async def go() -> list[AIDecision]:
            try:
                return [
                    await (retrying if n < 5 else once if n < len(prompts) - 1 else hasty).decide(prompt, outcomes)
                    for n, prompt in enumerate(prompts)
                ]
            finally:
                await retrying.close()
                await once.close()
                await hasty.close()

        prompts = [
            # with up to three attempts:
            "Notes: keen.",
            "[fake:outcome=follow_up][fake:reason=call back Tuesday]",
            "[fake:500x2] Notes: maybe later.",
            "[fake:429]",
            "[fake:529x1][fake:retry_after=0.25]",
            # with one attempt (the last within 0.3 s):
            "[fake:401]",
            "[fake:refusal]",
            "[fake:max_tokens]",
            "[fake:no_tool]",
            "[fake:bad_outcome]",
            "[fake:bad_input]",
            "[fake:no_outcome]",
            "[fake:slow=5]",
        ]
        got = [(r.outcome, r.reason if r.ok else r.error, r.attempts) for r in asyncio.run(go())]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert got == [
        ("interested", "default", 1),
        ("follow_up", "call back Tuesday", 1),
        ("interested", "default", 3),
        (None, "rate limited (429) 3 times", 3),
        ("interested", "default", 2),
        (None, "the API key was refused (401): fake authentication_error", 1),
        (None, "the model refused", 1),
        (None, "the answer was cut off (max_tokens)", 1),
        (None, "the model did not call the tool", 1),
        (None, "the model chose 'maybe', which is not one of interested, not_interested, follow_up", 1),
        (None, "the model's tool input is not an object ('yes')", 1),
        (None, "the model's answer has no outcome", 1),
        (None, "timed out after 0.3 s", 1),
    ]
    assert sleeps.waits == [0.5, 1.0, 1.0, 1.0, 0.25]  # backoff after the 500s; then the retry-after sent
    assert proc.returncode == 0


def test_decision_event_data_on_failure() -> None:
    failed = AIDecision(outcome=None, reason="", model=MODEL, attempts=2, error="the model refused 2 times")
    assert failed.event_data()["outcome"] is None
    assert failed.event_data()["error"] == "the model refused 2 times"
    assert dataclasses.asdict(failed) == failed.event_data()
