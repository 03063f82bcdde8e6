"""AI decisions: a Claude model picks one outcome of a decision node, through the official `anthropic` SDK.

workflows.md § AI decisions. The rendered prompt goes as the user message, with a system prompt saying the model
routes one step of a campaign-outreach workflow, and the node's outcomes as ONE forced tool (`choose_outcome`,
input `{"outcome": <enum of the outcomes>, "reason": <string>}`). Any answer that is not exactly one of the
outcomes is an error. `decide` never raises for what the API or the model does: every failure is an `AIDecision`
with `outcome=None` and an `error` sentence for the timeline; the caller then takes the rule's `fallback`, or
leaves the instance waiting for a person.

The policy (the defaults; each is a constructor argument):

- **One deadline for everything:** `timeout_s` (`CBW_AI_TIMEOUT_S`, 30 s) covers every attempt and every wait
  between them. Each request gets the time left as its timeout (and is cancelled when it runs out), so a decision
  never takes much longer than `timeout_s`. A timeout ends the decision ("timed out after 30 s"). The clock starts
  once the SDK is loaded: the first decision of a process imports it (seconds) in a thread, not on the event loop;
  `prepare()` does that ahead of time.
- **At most `max_attempts` (3) requests.** The SDK's own retries are off (`max_retries=0`); the policy is here.
- **Retried after a wait:** connection errors, 408, 409, 429, 500 and above (502, 503, 529 overloaded...). The
  wait is the answer's `retry-after-ms` or `retry-after` (seconds or an HTTP-date) when it asks for one, else
  exponential backoff with jitter: `min(backoff_max_s, backoff_base_s * 2**n) * uniform(0.5, 1)` for the n-th
  retry (1 s, 2 s, 4 s... halved at random). An `x-should-retry: true|false` header overrides the status. When the
  wait would leave less than `min_attempt_s` (1 s) before the deadline, there is no retry and the error says so (a
  retry-after is honoured, never shortened). The loop and the waits are `cbworkflow.retry`'s, as for webhooks.
- **Retried at once** (nothing to wait for, but a second sample can differ): a refusal, an answer that does not
  call the tool, a tool input that is not an object, has no outcome, or an outcome outside the enum, and an
  answer cut off at `max_tokens` (the next attempt may use twice the tokens, up to 4096).
- **Not retried:** 400, 401, 403, 404, 413, 422 and other 4xx (the same request would fail the same way), an
  oversized prompt (`model_context_window_exceeded`), and no API key, which answers at once without a request
  (`error="no ANTHROPIC_API_KEY configured"`).
- `attempts` counts the requests sent; tokens and `latency_ms` are summed over them (waits are not latency).

Importing this module does not import `anthropic` (slow); the client is made on first use, one per decider,
and shared by concurrent decisions. Use a decider from one event loop, and `await close()` it when done.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import retry
from ..retry import Next

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from cbworkflow.settings import Settings

__all__ = ["NO_KEY_ERROR", "TOOL_NAME", "AIDecider", "AIDecision"]

TOOL_NAME = "choose_outcome"
NO_KEY_ERROR = "no ANTHROPIC_API_KEY configured"
REASON_MAX_CHARS = 500
DEFAULT_MAX_TOKENS = 1024
MAX_TOKENS_CEILING = 4096
_DETAIL_MAX_CHARS = 200

SYSTEM_PROMPT = (
    "You are routing one step of a campaign-outreach workflow: a volunteer organisation contacts voters "
    "(calls, texts, door knocks) and each contact moves through the steps of a plan. The user message holds the "
    "organiser's question for this step, with what is known about the contact. Pick exactly one of the allowed "
    "outcomes by calling the {tool} tool once, with `outcome` set to one of: {outcomes}; and `reason` set to "
    "one short sentence a volunteer can read. Do not answer in text. If the information is insufficient, pick "
    "the outcome that best fits anyway and say so in the reason."
)

TOOL_DESCRIPTION = "Record the one outcome chosen for this step of the workflow, with a short reason."

_STATUS_WORDS = {
    400: "bad request",
    401: "the API key was refused",
    403: "permission denied",
    404: "not found",
    408: "request timeout",
    409: "conflict",
    413: "request too large",
    422: "unprocessable request",
    429: "rate limited",
    500: "server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
    529: "overloaded",
}


@dataclass
class AIDecision:
    """What an AI decision came to: an allowed outcome, or `outcome=None` with the `error` in words."""

    outcome: str | None
    reason: str
    model: str
    latency_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is not None

    def event_data(self) -> dict[str, Any]:
        """The `data` of the `decision_evaluated` event."""
        return {
            "outcome": self.outcome,
            "model": self.model,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass
class _Failure:
    """One attempt that did not give an allowed outcome."""

    description: str
    retry: Next
    retry_after: float | None = None  # what the server asked for, in seconds
    cut_off: bool = False


class AIDecider:
    """Asks the model to pick an outcome; one lazily made `AsyncAnthropic` client per decider."""

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 8.0,
        min_attempt_s: float = 1.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if timeout_s <= 0 or max_attempts < 1 or max_tokens < 1:
            raise ValueError("timeout_s must be positive, max_attempts and max_tokens at least 1")
        self.api_key = api_key or None
        self.model = model
        self.base_url = base_url or None
        self.timeout_s = timeout_s
        self.policy = retry.RetryPolicy(
            max_attempts=max_attempts,
            base_s=backoff_base_s,
            cap_s=backoff_max_s,
            jitter=retry.Jitter.HALF,
            deadline_s=timeout_s,
            min_attempt_s=min_attempt_s,
            retry_after_max_s=None,  # honoured in full: a wait past the deadline ends the decision instead
        )
        self.max_tokens = max_tokens
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._client: AsyncAnthropic | None = None
        self._client_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> AIDecider:
        """A decider on `ANTHROPIC_API_KEY`, `CBW_AI_MODEL`, `CBW_AI_BASE_URL`, `CBW_AI_TIMEOUT_S`."""
        return cls(
            api_key=settings.anthropic_api_key,
            model=settings.ai_model,
            base_url=settings.ai_base_url,
            timeout_s=settings.ai_timeout_s,
            **options,
        )

    @property
    def configured(self) -> bool:
        """Whether there is an API key (without one, every decision is an error without a request)."""
        return self.api_key is not None

    async def prepare(self) -> None:
        """Load the SDK and make the client now (in a thread), so the first decision does not wait for it."""
        if self.configured:
            await self._get_client()

    async def close(self) -> None:
        """Close the HTTP client (a later decision makes a new one)."""
        async with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def decide(self, prompt: str, outcomes: Sequence[str], *, model: str | None = None) -> AIDecision:
        """Ask the model (the rule's `model`, else the configured one) to pick one of `outcomes` for `prompt`."""
        result = AIDecision(outcome=None, reason="", model=model or self.model)
        allowed = list(dict.fromkeys(outcomes))
        if not self.configured:
            result.error = NO_KEY_ERROR
            return result
        if not allowed:
            result.error = "the node has no outcomes to choose from"
            return result
        try:
            client = await self._get_client()
        except Exception as exc:
            result.error = f"could not set up the anthropic client: {_short(exc)}"
            return result

        failures: list[str] = []
        tokens = self.max_tokens
        latency = 0.0

        async def once(left: float | None) -> retry.Tried[None]:
            nonlocal tokens, latency
            started = self._clock()
            try:
                answer = await self._attempt(client, result, prompt, allowed, tokens, left or 0.0)
            finally:
                latency += self._clock() - started
            if isinstance(answer, tuple):
                result.outcome, result.reason = answer
                return retry.Tried(None)
            failures.append(answer.description)
            if answer.cut_off:  # the next attempt may use twice the tokens
                tokens = min(tokens * 2, max(MAX_TOKENS_CEILING, self.max_tokens))
            return retry.Tried(None, answer.retry, answer.retry_after)

        done = await retry.run(once, self.policy, sleep=self._sleep, clock=self._clock, jitter=self._jitter)
        result.attempts = done.attempts
        result.latency_ms = round(latency * 1000)
        if result.outcome is None:
            result.error = _summary(failures, self._gave_up(done))
        return result

    def _gave_up(self, done: retry.Finished[None]) -> str | None:
        """Why no retry was made though one was due: the deadline left no room for the wait and an attempt."""
        if done.refused_wait_s is None:
            return None
        if done.wait_was_asked:
            return (
                f"the API asked to wait {_seconds(done.refused_wait_s)}, past the {_seconds(self.timeout_s)} deadline"
            )
        return f"no time left to retry within {_seconds(self.timeout_s)}"

    async def _attempt(
        self,
        client: AsyncAnthropic,
        result: AIDecision,
        prompt: str,
        allowed: list[str],
        max_tokens: int,
        time_s: float,
    ) -> tuple[str, str] | _Failure:
        """One request, given `time_s` at most: the (outcome, reason), or what went wrong. Adds its tokens."""
        try:
            async with asyncio.timeout(time_s):  # the SDK's timeout is per read: this bounds the whole request
                message = await client.messages.create(
                    model=result.model,
                    max_tokens=max_tokens,
                    system=SYSTEM_PROMPT.format(tool=TOOL_NAME, outcomes=", ".join(allowed)),
                    messages=[{"role": "user", "content": prompt}],
                    tools=[
                        {
                            "name": TOOL_NAME,
                            "description": TOOL_DESCRIPTION,
                            "input_schema": {
                                "type": "object",
                                "properties": {
                                    "outcome": {"type": "string", "enum": allowed},
                                    "reason": {"type": "string"},
                                },
                                "required": ["outcome", "reason"],
                            },
                        }
                    ],
                    tool_choice={"type": "tool", "name": TOOL_NAME},
                    timeout=time_s,
                )
        except Exception as exc:
            return self._from_exception(exc)
        usage = getattr(message, "usage", None)
        result.input_tokens += getattr(usage, "input_tokens", 0) or 0
        result.output_tokens += getattr(usage, "output_tokens", 0) or 0
        return _read_answer(message, allowed)

    def _from_exception(self, exc: Exception) -> _Failure:
        import anthropic

        if isinstance(exc, anthropic.APITimeoutError | TimeoutError):
            return _Failure(f"timed out after {_seconds(self.timeout_s)}", Next.STOP)
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f" ({_short(cause)})" if cause is not None and str(cause) else ""
            return _Failure(f"could not connect to the API{detail}", Next.AFTER_WAIT)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            headers = exc.response.headers
            again = Next.AFTER_WAIT if status in (408, 409, 429) or status >= 500 else Next.STOP
            should_retry = (headers.get("x-should-retry") or "").strip().lower()
            if should_retry in ("true", "false"):
                again = Next.AFTER_WAIT if should_retry == "true" else Next.STOP
            words = _STATUS_WORDS.get(status, "server error" if status >= 500 else "API error")
            description = f"{words} ({status})"
            api_message = getattr(exc, "api_message", None)
            if again is Next.STOP and isinstance(api_message, str) and api_message.strip():
                description += f": {_short(api_message)}"
            return _Failure(description, again, retry_after=retry.retry_after(headers))
        if isinstance(exc, anthropic.AnthropicError):
            return _Failure(f"the anthropic client failed: {_short(exc)}", Next.STOP)
        return _Failure(f"unexpected error: {type(exc).__name__}: {_short(exc)}", Next.STOP)

    async def _get_client(self) -> AsyncAnthropic:
        async with self._client_lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._make_client)
            return self._client

    def _make_client(self) -> AsyncAnthropic:
        """Import the SDK (seconds, the first time in a process) and build the client; runs in a thread."""
        anthropic = sys.modules.get("anthropic") or importlib.import_module("anthropic")
        client: AsyncAnthropic = anthropic.AsyncAnthropic(
            api_key=self.api_key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
        )
        client.messages  # noqa: B018 (a cached property that imports the resource module: here, not on the loop)
        return client


def _read_answer(message: Any, allowed: list[str]) -> tuple[str, str] | _Failure:
    """The (outcome, reason) of an answer, or what is wrong with it."""
    stop_reason = getattr(message, "stop_reason", None)
    if stop_reason == "refusal":
        return _Failure("the model refused", Next.AT_ONCE)
    if stop_reason == "max_tokens":
        return _Failure("the answer was cut off (max_tokens)", Next.AT_ONCE, cut_off=True)
    if stop_reason == "model_context_window_exceeded":
        return _Failure("the prompt is too long for the model's context window", Next.STOP)
    calls = [b for b in getattr(message, "content", None) or [] if getattr(b, "type", None) == "tool_use"]
    if not calls:
        return _Failure("the model did not call the tool", Next.AT_ONCE)
    call = next((c for c in calls if getattr(c, "name", None) == TOOL_NAME), None)
    if call is None:
        return _Failure(f"the model called an unknown tool {_short(getattr(calls[0], 'name', ''))!r}", Next.AT_ONCE)
    data: object = getattr(call, "input", None)
    if not isinstance(data, dict):
        return _Failure(f"the model's tool input is not an object ({_short(repr(data))})", Next.AT_ONCE)
    if "outcome" not in data:
        return _Failure("the model's answer has no outcome", Next.AT_ONCE)
    outcome = data["outcome"]
    if not isinstance(outcome, str) or outcome not in allowed:
        shown = repr(outcome) if isinstance(outcome, str) else f"{_short(repr(outcome))} (not a string)"
        return _Failure(f"the model chose {_short(shown)}, which is not one of {', '.join(allowed)}", Next.AT_ONCE)
    reason = data.get("reason")
    return outcome, reason.strip()[:REASON_MAX_CHARS] if isinstance(reason, str) else ""


def _summary(failures: list[str], gave_up: str | None) -> str:
    """The failed attempts in words: repeated ones counted ("rate limited (429) 3 times")."""
    parts: list[str] = []
    index = 0
    while index < len(failures):
        same = index
        while same < len(failures) and failures[same] == failures[index]:
            same += 1
        count, text = same - index, failures[index]
        if count > 1:
            text = f"{text} ({count} times)" if "," in text or ":" in text else f"{text} {count} times"
        parts.append(text)
        index = same
    text = ", then ".join(parts) or "no answer"
    return f"{text}; {gave_up}" if gave_up else text


def _seconds(value: float) -> str:
    return f"{round(value, 2):g} s"


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _DETAIL_MAX_CHARS else text[: _DETAIL_MAX_CHARS - 1] + "…"
