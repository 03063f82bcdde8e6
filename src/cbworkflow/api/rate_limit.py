"""Per-token rate limiting: a token bucket per API token, in this process (429 with Retry-After when empty). Routes
anyone may call (inbound texts) have a bucket per client address instead.

Each token may make `rate` requests a second on average, with bursts up to two seconds' worth. With several
server processes each keeps its own buckets, so the effective limit is `rate` times the number of processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from ..errors import CbwError


class RateLimited(CbwError):
    status_code = 429


class RateLimiter:
    def __init__(self, rate: float, max_tokens_tracked: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # token id -> (level, last time)
        self._max = max_tokens_tracked
        self._lock = threading.Lock()

    def check(self, key: str, whose: str = "this token") -> None:
        """Take one request from `key`'s bucket, or raise RateLimited saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.pop(key, (self.burst, now))
            level = min(self.burst, level + (now - last) * self.rate)
            if level < 1:
                self._buckets[key] = (level, now)
                wait = math.ceil((1 - level) / self.rate)
                raise RateLimited(f"too many requests for {whose}; retry in {wait} s", retry_after=wait)
            self._buckets[key] = (level - 1, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
