"""The sample a search plan is chosen by: trigram counts, what is common, the rarest trigrams, its lifetime."""

from __future__ import annotations

import pytest

from cbworkflow.store import search_sample
from cbworkflow.store.search_sample import Sample, Samples

TEXTS = [
    ("ada lovelace", "ada@example.org", "15552013344"),
    ("grace hopper", "grace@example.org", ""),
    ("alan turing", "", "442079460000"),
]


def test_trigrams_are_counted_once_per_contact() -> None:
    sample = Sample.of(TEXTS, now=0.0)
    assert sample.counts["exa"] == 2  # two emails
    assert sample.counts["ada"] == 1  # in the name and the email of one contact
    assert sample.counts["555"] == 1
    assert sample.counts["zzz"] == 0


def test_rarest_trigrams_first_and_only_usable_ones() -> None:
    sample = Sample.of(TEXTS, now=0.0)
    assert sample.rarest("ada@example.org", 2) == ["ada", "da@"]  # those in one contact, before `exa` (two)
    assert sample.rarest("ada@example.org", 2, str.isalnum) == ["ada", "exa"]  # of two as rare, the earlier
    assert sample.rarest("ab", 3) == []


def test_each_word_is_narrowed_before_any_twice() -> None:
    sample = Sample.of([("mark twain", "", ""), ("mark gonzalez", "", "")] + [("mark ruffalo", "", "")] * 5, now=0.0)
    # the rarest trigrams are all of `gonzalez` (in one contact), but `mark` gets one too
    assert sample.rarest("mark gonzalez", 3, str.isalnum) == ["gon", "mar", "onz"]
    assert sample.rarest("mark gonzalez", 2) == ["k g", " go"]  # one run when spaces count: the rarest


def test_common_is_a_share_of_the_sample() -> None:
    sample = Sample.of(TEXTS * 40, now=0.0)  # 120 contacts, each text held by a third
    assert sample.common("example", None)
    assert sample.common("turing", None)
    assert sample.common("zz", "2079")  # by the phone digits
    assert not sample.common("nobody", None)
    assert not Sample.of([], now=0.0).common("ada", None)
    few = Sample.of(TEXTS + [("pat", "", "")] * 200, now=0.0)  # 1 in 203: under 1%
    assert not few.common("lovelace", None)


def test_a_sample_is_kept_for_its_lifetime_per_tenant() -> None:
    now = [0.0]
    taken: list[int] = []
    samples = Samples(clock=lambda: now[0])

    def take(count: int) -> list[tuple[str, str, str]]:
        taken.append(count)
        return TEXTS

    first = samples.of("a", take)
    assert samples.of("a", take) is first
    assert taken == [search_sample.SAMPLE_SIZE]
    samples.of("b", take)
    assert len(taken) == 2
    now[0] = search_sample.LIFETIME_S
    assert samples.of("a", take) is not first
    assert len(taken) == 3


def test_only_so_many_tenants_are_kept() -> None:
    samples = Samples(clock=lambda: 0.0)
    taken: list[str] = []
    for n in range(search_sample.TENANTS_KEPT + 1):
        samples.of(f"t{n}", lambda _count, n=n: taken.append(f"t{n}") or TEXTS)
    samples.of("t0", lambda _count: taken.append("t0 again") or TEXTS)  # the least recently used went first
    assert taken[-1] == "t0 again"


def test_a_sample_is_bounded_however_long_and_varied_the_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_sample, "TRIGRAMS_KEPT", 1_000)
    varied = [("".join(chr(0x4E00 + (n * 7 + i) % 20_000) for i in range(200)), "", "") for n in range(2_000)]
    sample = Sample.of(varied, now=0.0)
    assert sample.size < 2_000  # it stopped counting contacts once it held enough trigrams
    assert len(sample.counts) < 1_000 + 3 * search_sample.TEXT_CHARS
    assert len(sample.words) <= sample.size * (search_sample.TEXT_CHARS + 2)
