"""One evaluation's budgets: time (CPU), loop steps, allocations, the weight of built values, hash chains."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Collection, Hashable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .limits import (
    CHECK_EVERY,
    MAX_ALLOCATED,
    MAX_DEEP,
    MAX_INT_BITS,
    MAX_SET_COLLISIONS,
    MAX_SIZE,
    MAX_STEPS,
    ExpressionError,
    int_too_large,
    too_large,
)
from .words import CONTAINERS, FLAT, SEQUENCES, a_kind, kind, none_hint


class Run:
    """One evaluation: the variables, the clock and the budgets. Never shared between threads."""

    __slots__ = (
        *("allocated", "deadline", "next_check", "now", "steps", "ticks", "timeout_s", "variables", "weights"),
    )

    def __init__(self, variables: Mapping[str, Any], now: datetime, timeout_s: float) -> None:
        self.variables = variables
        self.now = now
        self.timeout_s = timeout_s
        self.deadline = time.thread_time() + timeout_s
        self.ticks = 0
        self.next_check = CHECK_EVERY
        self.steps = 0
        self.allocated = 0
        self.weights: dict[int, tuple[object, int]] = {}  # id -> (value, weight) of containers weighed

    # budgets

    def tick(self, work: int = 1) -> None:
        """Count work; every `CHECK_EVERY` units, look at the clock."""
        self.ticks += work
        if self.ticks >= self.next_check:
            self.next_check = self.ticks + CHECK_EVERY
            if time.thread_time() > self.deadline:
                ms = self.timeout_s * 1000
                raise ExpressionError(f"took longer than {ms:g} ms (the time limit of an expression)")

    def step(self, count: int = 1) -> None:
        """Count elements looped over."""
        self.steps += count
        if self.steps > MAX_STEPS:
            raise ExpressionError(f"loops over more than {MAX_STEPS:,} items in all")
        self.tick(count)

    def allocate(self, size: int, what: str) -> None:
        if size > MAX_SIZE:
            raise too_large(what)
        self.allocated += size
        if self.allocated > MAX_ALLOCATED:
            raise ExpressionError(f"builds too much (over {MAX_ALLOCATED:,} characters and items in all)")
        self.tick(size)

    def weigh(self, value: object) -> int:
        """Items and characters of `value`, counting what its items hold (aliases each time they appear).

        This is what comparing, hashing or printing the value costs, so built values are refused past
        `MAX_DEEP`; and str()/repr() of a value is at least this long, which lets `str` refuse before it builds.
        Values the expression built are weighed once, when built (`result`), and remembered, so weighing a
        new container only looks at its own items. Anything else is input data (JSON: a tree, no aliases),
        weighed once by the length of its repr, at C speed.
        """
        if isinstance(value, str):
            return len(value) + 1
        if isinstance(value, int) and not isinstance(value, bool):
            return max(1, value.bit_length() * 3 // 10)  # at most its number of digits
        if not isinstance(value, CONTAINERS):
            return 1
        found = self.weights.get(id(value))
        if found is None and isinstance(value, tuple):  # built by Python for us (`items()` pairs): no JSON tuple
            return self.weigh_built(value)
        if found is None:
            found = self.weights[id(value)] = (value, len(repr(value)))  # the entry keeps the id from reuse
            self.tick(found[1] // 8)
        return found[1]

    def weigh_built(self, container: list[Any] | tuple[Any, ...] | dict[Any, Any] | set[Any]) -> int:
        items: Collection[Any] = container
        if isinstance(container, dict):
            items = (*container.keys(), *container.values())
        total = len(container) + 1
        kinds = set(map(type, items))  # flat containers (the big ones, in practice) are weighed at C speed
        if kinds <= {str}:
            total += sum(map(len, items)) + len(container)
        elif kinds <= {int}:
            total += len(container) + sum(map(int.bit_length, items)) * 3 // 10  # digits, give or take one
        elif kinds <= FLAT:
            total += len(container)
        else:
            for item in items:
                total += self.weigh(item)
                if total > MAX_DEEP:
                    break
        if total > MAX_DEEP:
            raise too_large("items and characters, counting what its items hold", MAX_DEEP)
        self.weights[id(container)] = (container, total)
        self.tick(len(container))
        return total

    def result(self, value: Any) -> Any:
        """Check a value an operator, method or helper produced: finite numbers, bounded sizes."""
        if value is None or isinstance(value, (bool, datetime, timedelta)):
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise int_too_large()
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ExpressionError("the result is not a finite number (too large, or not a number)")
            return value
        if isinstance(value, str):
            self.allocate(len(value), "characters")
            return value
        if isinstance(value, CONTAINERS):
            if len(value) > MAX_SIZE:
                raise too_large("items")
            if isinstance(value, set | frozenset | dict):
                check_hash_chains(value)
            self.weigh_built(value)  # type: ignore[arg-type]
            self.allocate(len(value), "items")
            return value
        if isinstance(value, complex):
            raise ExpressionError("the result is a complex number")
        raise ExpressionError(f"produced {a_kind(value)} value, which expressions cannot use")

    def loop(self, value: object, what: str) -> Any:
        """The elements of a value looped over, counted against the step budget."""
        if isinstance(value, (*SEQUENCES, dict, set, frozenset)):
            self.step(len(value))
            return value
        raise ExpressionError(f"{what} needs a list, text or dict to loop over, not {kind(value)}{none_hint(value)}")


def hash_chain_error() -> ExpressionError:
    return ExpressionError(
        f"builds a set or dict with over {MAX_SET_COLLISIONS} different items of one hash value "
        "(such items make every lookup slow: use a list)"
    )


def check_hash_chains(container: Collection[Hashable]) -> None:
    """Refuse a set (or a dict's keys) where many distinct items share one hash value.

    Python finds an item by its hash, then compares along the items of that hash: with n distinct items of one
    hash (the multiples of 2**61-1 are one int hash; -1 and -2 are another, so tuples of them collide by the
    thousand), every lookup costs n comparisons and building the set costs n squared, in one C call the clock
    cannot interrupt. Random data never comes near the limit; crafted data stops here. Linear, at C speed.
    """
    if len(container) > MAX_SET_COLLISIONS and max(Counter(map(hash, container)).values()) > MAX_SET_COLLISIONS:
        raise hash_chain_error()


class HashedBuilder:
    """Builds a set or dict one item at a time, so no single insertion can walk a long hash chain.

    A comprehension or display that made a set in one call (`set(items)`) would run the quadratic build above
    before any check; here each new key is counted by its hash first, and the clock is looked at as we go.
    """

    __slots__ = ("chains", "run", "what")

    def __init__(self, run: Run, what: str) -> None:
        self.run = run
        self.what = what  # "set item" or "dict key", for messages
        self.chains: dict[int, int] = {}  # hash value -> distinct keys with it (hash values never collide)

    def admit(self, container: set[Any] | dict[Any, Any], key: object) -> None:
        """Check `key` before it goes into `container`; a key already there costs nothing more."""
        self.run.tick()
        try:
            if key in container:  # chains are kept short, so this lookup is too
                return
            value = hash(key)
        except TypeError:
            raise ExpressionError(f"{a_kind(key)} cannot be a {self.what}") from None
        count = self.chains.get(value, 0) + 1
        if count > MAX_SET_COLLISIONS:
            raise hash_chain_error()
        self.chains[value] = count
        if len(container) >= MAX_SIZE:
            raise too_large("items")
