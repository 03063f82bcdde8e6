"""The flat map of key hashes to first lines an import's first pass keeps (`services/seen_keys.py`)."""

from __future__ import annotations

import random
import tracemalloc

from cbworkflow.services.seen_keys import SeenKeys


def test_it_keeps_the_first_line_of_each_key_like_a_dict() -> None:
    rng = random.Random(7)
    seen, expected = SeenKeys(), {}
    for line in range(1, 50_001):
        key = rng.getrandbits(64) - 2**63 if line % 3 else rng.randrange(-500, 500)  # some repeated, some negative
        kept = seen.setdefault(key, line)
        assert kept == expected.setdefault(key if key != 0 else 1, line)
    assert len(seen) == len(expected)
    for key, line in expected.items():
        assert seen.get(key) == line
    assert seen.get(2**62 + 12345) is None


def test_hash_zero_is_kept_as_one() -> None:
    seen = SeenKeys()
    assert seen.setdefault(0, 5) == 5
    assert seen.get(1) == 5
    assert seen.setdefault(1, 9) == 5


def test_many_keys_take_a_fraction_of_a_dicts_memory() -> None:
    rng = random.Random(3)
    keys = [rng.getrandbits(63) for _ in range(200_000)]
    tracemalloc.start()
    seen = SeenKeys()
    for line, key in enumerate(keys, 1):
        seen.setdefault(key, line)
    flat, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    kept: dict[int, int] = {}
    for line, key in enumerate(keys, 1):
        kept.setdefault(key, line)
    as_dict, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(seen) == len(kept) == 200_000
    assert flat < as_dict / 2
