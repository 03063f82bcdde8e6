"""The one retry policy (`cbworkflow.retry`): waits, Retry-After, the deadline and the loop, on a fake clock and a
fake sleep, so nothing here waits. The callers' own behaviour is in test_ai.py, test_outbound.py, test_executors.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from cbworkflow.retry import Finished, Jitter, Next, RetryPolicy, Tried, retry_after, retry_after_seconds, run


class Time:
    """A fake clock and the sleep that moves it; each attempt may take `took` seconds on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Script:
    """An attempt that answers from a list, records the time left it was given, and takes `took` seconds."""

    def __init__(self, answers: Sequence[Tried[str]], time: Time | None = None, took: float = 0.0) -> None:
        self.answers = list(answers)
        self.time = time
        self.took = took
        self.given: list[float | None] = []

    async def __call__(self, left: float | None) -> Tried[str]:
        self.given.append(left)
        if self.time is not None:
            self.time.now += self.took
        return self.answers.pop(0)


def busy(retry_after_s: float | None = None) -> Tried[str]:
    return Tried("busy", Next.AFTER_WAIT, retry_after_s)


def go(attempt: Script, policy: RetryPolicy, time: Time | None = None, **options: Any) -> Finished[str]:
    if time is not None:
        options |= {"sleep": time.sleep, "clock": time.clock}
    options.setdefault("jitter", lambda: 1.0)
    return asyncio.run(run(attempt, policy, **options))


def test_a_success_or_a_final_failure_ends_at_once() -> None:
    time = Time()
    for answer in (Tried("ok"), Tried("refused", Next.STOP)):
        done = go(Script([answer]), RetryPolicy(max_attempts=5, base_s=1, cap_s=10), time)
        assert (done.last, done.attempts, done.refused_wait_s) == (answer.value, 1, None)
    assert time.waits == []


def test_backoff_doubles_up_to_the_cap_and_the_attempts_run_out() -> None:
    time = Time()
    done = go(Script([busy()] * 6), RetryPolicy(max_attempts=6, base_s=0.5, cap_s=3), time)
    assert (done.last, done.attempts, done.refused_wait_s) == ("busy", 6, None)
    assert time.waits == [0.5, 1.0, 2.0, 3.0, 3.0]  # no wait after the last attempt


@pytest.mark.parametrize(
    ("jitter", "draw", "waits"),
    [
        (Jitter.FULL, 0.0, []),  # a wait of nothing is no wait at all
        (Jitter.FULL, 0.25, [0.25, 0.5, 1.0]),
        (Jitter.HALF, 0.0, [0.5, 1.0, 2.0]),
        (Jitter.HALF, 0.5, [0.75, 1.5, 3.0]),
    ],
)
def test_jitter_draws_below_the_ceiling(jitter: Jitter, draw: float, waits: list[float]) -> None:
    time = Time()
    go(Script([busy()] * 4), RetryPolicy(max_attempts=4, base_s=1, cap_s=60, jitter=jitter), time, jitter=lambda: draw)
    assert time.waits == waits


def test_a_retry_at_once_neither_waits_nor_moves_the_backoff_on() -> None:
    time = Time()
    answers = [busy(), Tried("wrong", Next.AT_ONCE), Tried("wrong", Next.AT_ONCE), busy(), Tried("ok")]
    done = go(Script(answers), RetryPolicy(max_attempts=5, base_s=1, cap_s=60), time)
    assert (done.last, done.attempts) == ("ok", 5)
    assert time.waits == [1.0, 2.0]


def test_retry_after_is_honoured_capped_or_ignored_as_the_policy_says() -> None:
    answers = [busy(7), busy(3600), busy(0), busy()]
    time = Time()
    go(Script(answers), RetryPolicy(max_attempts=4, base_s=1, cap_s=30), time)
    assert time.waits == [7.0, 3600.0, 4.0]  # in full; a Retry-After of 0 asks nothing: the backoff

    time = Time()
    go(Script(answers), RetryPolicy(max_attempts=4, base_s=1, cap_s=30, retry_after_max_s=30), time)
    assert time.waits == [7.0, 30.0, 4.0]

    time = Time()
    go(Script(answers), RetryPolicy(max_attempts=4, base_s=1, cap_s=30, honour_retry_after=False), time)
    assert time.waits == [1.0, 2.0, 4.0]


def test_each_attempt_is_told_the_time_left_before_the_deadline() -> None:
    time = Time()
    attempt = Script([busy()] * 3, time, took=2.0)
    done = go(attempt, RetryPolicy(max_attempts=3, base_s=1, cap_s=60, deadline_s=10), time)
    assert done.attempts == 3
    assert attempt.given == [10.0, 7.0, 3.0]  # 2 s per attempt, then waits of 1 s and 2 s

    unbounded = Script([busy()] * 2)
    go(unbounded, RetryPolicy(max_attempts=2, base_s=1, cap_s=60), Time())
    assert unbounded.given == [None, None]


def test_no_retry_whose_wait_leaves_less_than_a_useful_attempt() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1, cap_s=60, deadline_s=10, min_attempt_s=2)
    time = Time()
    done = go(Script([busy()] * 10, time, took=1.0), policy, time)
    # attempts at 0, 2 and 5 s (each 1 s, waits 1 s and 2 s); the wait of 4 s at 6 s would leave 0 s < 2 s
    assert (done.attempts, time.waits, done.refused_wait_s, done.wait_was_asked) == (3, [1.0, 2.0], 4.0, False)

    time = Time()
    done = go(Script([busy(60)], time), policy, time)
    assert (done.attempts, time.waits, done.refused_wait_s, done.wait_was_asked) == (1, [], 60.0, True)

    time = Time()
    done = go(Script([Tried("wrong", Next.AT_ONCE)] * 10, time, took=4.5), policy, time)
    assert (done.attempts, done.refused_wait_s) == (2, 0.0)  # 1 s left after two: not enough for a third


def test_without_a_clock_a_wait_counts_as_asked() -> None:
    """The callers' tests inject an instant sleep and keep the real clock: the deadline still sees the waits."""
    waits: list[float] = []

    async def instant(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_attempts=10, base_s=20, cap_s=20, deadline_s=50)
    done = go(Script([busy()] * 10), policy, sleep=instant)
    assert (done.attempts, waits, done.refused_wait_s) == (3, [20.0, 20.0], 20.0)


def test_with_a_clock_the_clock_alone_tells_the_time() -> None:
    """A clock that the sleep does not move sees no time pass (a test that pins the clock pins the deadline)."""
    waits: list[float] = []

    async def instant(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_attempts=4, base_s=20, cap_s=20, deadline_s=50)
    done = go(Script([busy()] * 4), policy, sleep=instant, clock=lambda: 0.0)
    assert (done.attempts, waits) == (4, [20.0, 20.0, 20.0])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"base_s": -1}, "must not be negative"),
        ({"min_attempt_s": -1}, "must not be negative"),
        ({"deadline_s": 0}, "deadline_s must be positive"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RetryPolicy(**({"max_attempts": 3, "base_s": 1, "cap_s": 10} | options))


# ------------------------------------------------------------------------------------------------ Retry-After
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0.25", 0.25),  # a decimal fraction, as some APIs send
        ("0", 0.0),
        ("Thu, 02 Jan 2025 03:04:35 GMT", 30.0),
        ("Wed, 01 Jan 2025 00:00:00 GMT", 0.0),  # in the past: now
        ("-5", None),
        ("1e3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, NOW) == seconds


def test_retry_after_ms_comes_before_retry_after() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}, NOW) == 1.5
    assert retry_after({"retry-after-ms": "soon", "retry-after": "9"}, NOW) == 9.0
    assert retry_after({"retry-after": "Thu, 02 Jan 2025 03:04:35 GMT"}, NOW) == 30.0
    assert retry_after({}, NOW) is None


def test_retry_after_reads_case_insensitive_headers() -> None:
    import httpx

    assert retry_after(httpx.Headers({"Retry-After-Ms": "250"})) == 0.25
    assert retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
