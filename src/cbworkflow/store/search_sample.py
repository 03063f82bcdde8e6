"""What a tenant's newest contacts say about a search before it runs: how common the text is, and which of its
trigrams are rare.

Why: both SQL stores find substrings through trigram indexes (SQLite's FTS5 table, PostgreSQL's `pg_trgm`), and
both read every trigram of the text. A whole email or a full name is twenty or thirty trigrams, most of them
common (`exa`, `.or`, `son`), so a search for one person read the lists of a million contacts (10 ms on SQLite,
40 ms on PostgreSQL, at a million). A few rare trigrams of the text find the same contacts among far fewer
candidates, each then checked for the whole text. Which are rare, and whether the text is so common that
walking the contacts newest first fills a page at once, a sample of the newest contacts says: it is taken once
per tenant, kept for a few minutes, and is only an estimate (the answer is checked the same way whatever it says).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

SAMPLE_SIZE = 2_000  # the newest contacts of the tenant a sample holds
LIFETIME_S = 300.0  # a sample is taken again after this long
TENANTS_KEPT = 16  # samples kept at once (the least recently used tenant's goes first): 0.3-5 MB each
RARE_TRIGRAMS = 3  # the trigrams of a text an index search is narrowed by
TEXT_CHARS = 64  # of each name, email and phone in a sample
TRIGRAMS_KEPT = 50_000  # distinct trigrams a sample counts at most (about 5 MB)
COMMON_SHARE = 0.01  # a text held by this share of the sample fills a page within the newest few thousand


@dataclass(frozen=True)
class Sample:
    """The texts of a tenant's newest contacts (lower-cased name and email, phone digits), and in how many of
    them each trigram appears."""

    size: int
    words: str  # every name and email, one after another, apart (`\0`)
    phones: str  # every phone's digits, the same way
    counts: Counter[str]
    taken: float

    @classmethod
    def of(cls, texts: Iterable[tuple[str, str, str]], now: float) -> Sample:
        """Each text cut to `TEXT_CHARS`, and no more contacts counted once `TRIGRAMS_KEPT` distinct trigrams are
        (long, varied names would otherwise make a sample of a hundred megabytes)."""
        kept: list[tuple[str, str, str]] = []
        counts: Counter[str] = Counter()
        for name, email, phone in texts:
            fields = (name[:TEXT_CHARS], email[:TEXT_CHARS], phone[:TEXT_CHARS])
            counts.update({text[i : i + 3] for text in fields for i in range(len(text) - 2)})
            kept.append(fields)
            if len(counts) >= TRIGRAMS_KEPT:
                break
        words = "\0".join(text for name, email, _ in kept for text in (name, email))
        return cls(len(kept), words, "\0".join(phone for *_, phone in kept), counts, now)

    def common(self, words: str, digits: str | None) -> bool:
        """Whether the text is held `COMMON_SHARE` of the sample times or more (in names and emails, or phone
        digits; a contact holding it in both its name and its email counts twice: it is an estimate)."""
        held = self.words.count(words) + (self.phones.count(digits) if digits else 0)
        return self.size > 0 and held >= max(1, COMMON_SHARE * self.size)

    def rarest(self, text: str, count: int, usable: Callable[[str], bool] = lambda _: True) -> list[str]:
        """Up to `count` distinct trigrams of `text` that `usable` accepts, the rarest in the sample first (the
        earlier in the text of two as rare); the rarest of each run of usable ones before any second of a run, so
        a full name is narrowed by both its words, not twice by one."""
        runs: list[list[str]] = []
        after = -2
        for i in range(len(text) - 2):
            window = text[i : i + 3]
            if not usable(window):
                continue
            if i != after + 1:
                runs.append([])
            runs[-1].append(window)
            after = i
        by_count = [sorted(run, key=lambda w: self.counts[w]) for run in runs]
        firsts = sorted((run[0] for run in by_count), key=lambda w: self.counts[w])
        rest = sorted((w for run in by_count for w in run[1:]), key=lambda w: self.counts[w])
        return list(dict.fromkeys(firsts + rest))[:count]


class Samples:
    """A sample per tenant, taken on first use and again once `LIFETIME_S` old; safe across store threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, Sample] = OrderedDict()

    def of(self, tenant: str, take: Callable[[int], Iterable[tuple[str, str, str]]]) -> Sample:
        """The tenant's sample; `take(n)` reads the newest `n` contacts' texts when a new one is needed."""
        now = self._clock()
        with self._lock:
            kept = self._kept.get(tenant)
            if kept is not None and now - kept.taken < LIFETIME_S:
                self._kept.move_to_end(tenant)
                return kept
        sample = Sample.of(take(SAMPLE_SIZE), now)  # outside the lock: two threads may both take one, no harm
        with self._lock:
            self._kept[tenant] = sample
            self._kept.move_to_end(tenant)
            while len(self._kept) > TENANTS_KEPT:
                self._kept.popitem(last=False)
        return sample
