"""One retry policy for every call out that may fail for a while: the model, webhooks and texts (HTTP), email (SMTP).

Each caller says what one attempt is and what its failure calls for (`Tried`: stop, try again at once, or try again
after a wait); the policy says how many attempts, how long each wait is (exponential backoff with jitter, or what
the server asked for in `Retry-After`), and one deadline for the attempts and the waits together; `run` is the loop.

Time is read from the `clock` given (a test moves a fake clock with its fake sleep). Without one, attempts are
measured on the monotonic clock and a wait counts as the time it asked for, so a test that injects an instant
`sleep` sees the decisions a real wait would bring.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["Finished", "Jitter", "Next", "RetryPolicy", "Tried", "retry_after", "retry_after_seconds", "run"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # delta-seconds; a decimal fraction too, as some APIs send


class Next(Enum):
    """What a finished attempt calls for."""

    STOP = "stop"  # a success, or a failure that another attempt would only repeat
    AT_ONCE = "at once"  # nothing to wait for, but another try may differ (a model's second sample)
    AFTER_WAIT = "after a wait"  # the other side is busy or unreachable: back off, or wait as it asked


class Jitter(Enum):
    """How a backoff wait is drawn below its ceiling."""

    FULL = "full"  # anywhere in [0, ceiling): spreads many callers the most
    HALF = "half"  # in [ceiling / 2, ceiling): never much shorter than planned


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to try again.

    The n-th wait (from 0) is `min(cap_s, base_s * 2**n)` drawn per `jitter`, unless the server asked for a wait
    (`Retry-After` above 0) and `honour_retry_after`: then that, cut to `retry_after_max_s` when set. A retry whose
    wait would leave less than `min_attempt_s` before `deadline_s` (counted from the first attempt) is not made.
    """

    max_attempts: int
    base_s: float
    cap_s: float
    jitter: Jitter = Jitter.FULL
    deadline_s: float | None = None
    min_attempt_s: float = 0.0
    honour_retry_after: bool = True
    retry_after_max_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_s, self.cap_s, self.min_attempt_s) < 0:
            raise ValueError("base_s, cap_s and min_attempt_s must not be negative")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    def backoff(self, retry: int, draw: float) -> float:
        """The wait before retry number `retry` (0 for the first), for a `draw` in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(retry, 60))
        return ceiling * (draw if self.jitter is Jitter.FULL else 0.5 + 0.5 * draw)

    def wait(self, retry: int, asked_s: float | None, draw: Callable[[], float]) -> tuple[float, bool]:
        """The wait before retry number `retry`, and whether it is the one the server asked for."""
        if self.honour_retry_after and asked_s is not None and asked_s > 0:
            cap = self.retry_after_max_s
            return (asked_s if cap is None else min(asked_s, cap)), True
        return self.backoff(retry, draw()), False

    def left(self, elapsed_s: float) -> float | None:
        """Seconds left before the deadline, None without one."""
        return None if self.deadline_s is None else self.deadline_s - elapsed_s


@dataclass(frozen=True)
class Tried(Generic[T]):
    """One attempt: its `value` (an answer, an error...) and what it calls for."""

    value: T
    next: Next = Next.STOP
    retry_after_s: float | None = None  # the wait the server asked for, if any


@dataclass(frozen=True)
class Finished(Generic[T]):
    """What the loop came to: the last attempt's value, how many attempts were made, and, when the loop stopped
    because the deadline left no room, the wait that did not fit (and whether the server had asked for it)."""

    last: T
    attempts: int
    refused_wait_s: float | None = None
    wait_was_asked: bool = False


class _Elapsed:
    """Seconds since the loop began, on `clock`; without one, on the monotonic clock with waits counted as asked."""

    def __init__(self, clock: Clock | None) -> None:
        self._clock = clock or time.monotonic
        self._waits_as_asked = clock is None
        self._shift = 0.0
        self._start = self._clock()

    def __call__(self) -> float:
        return self._clock() - self._start + self._shift

    async def wait(self, sleep: Sleep, seconds: float) -> None:
        before = self._clock()
        await sleep(seconds)
        if self._waits_as_asked:
            self._shift += seconds - (self._clock() - before)


async def run(
    attempt: Callable[[float | None], Awaitable[Tried[T]]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock | None = None,
    jitter: Callable[[], float] = random.random,
) -> Finished[T]:
    """Call `attempt(seconds left before the deadline, or None)` until it says stop, the attempts run out, or the
    next wait would not leave `min_attempt_s` before the deadline."""
    elapsed = _Elapsed(clock)
    waits = 0
    number = 0
    while True:
        number += 1
        tried = await attempt(policy.left(elapsed()))
        if tried.next is Next.STOP or number >= policy.max_attempts:
            return Finished(tried.value, number)
        delay, asked = 0.0, False
        if tried.next is Next.AFTER_WAIT:
            delay, asked = policy.wait(waits, tried.retry_after_s, jitter)
            waits += 1
        left = policy.left(elapsed())
        if left is not None and left - delay < policy.min_attempt_s:
            return Finished(tried.value, number, refused_wait_s=delay, wait_was_asked=asked)
        if delay > 0:
            await elapsed.wait(sleep, delay)


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """A `Retry-After` value in seconds: delta-seconds, or an HTTP-date (counted from `now`, 0 once past); None
    when absent or unreadable (a negative number, a word)."""
    if not value:
        return None
    value = value.strip()
    if _NUMBER.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def retry_after(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """The wait an answer asks for, in seconds: `retry-after-ms` (milliseconds, as some APIs send, the model's
    among them) before `retry-after`. `headers` looks names up in lower case (a case-insensitive mapping will do)."""
    milliseconds = (headers.get("retry-after-ms") or "").strip()
    if _NUMBER.fullmatch(milliseconds):
        return float(milliseconds) / 1000
    return retry_after_seconds(headers.get("retry-after"), now)
