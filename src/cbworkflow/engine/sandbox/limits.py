"""The sandbox's limits, and the error every breach of them raises (one sentence for the template author)."""

from __future__ import annotations

from typing import Final

MAX_EXPRESSION_CHARS: Final = 10_000
# Syntax-tree depth (`a + b + c` nests one level per `+`): the walk recurses, so a saved template must not be
# able to exhaust the stack at run time.
MAX_EXPRESSION_DEPTH: Final = 100
MAX_SIZE: Final = 100_000  # characters of a str, or items of a list/tuple/dict/set, the expression builds
MAX_DEEP: Final = 1_000_000  # items and characters of a built value, counting what its items hold
MAX_ALLOCATED: Final = 1_000_000  # characters and items built by one evaluation, in all
MAX_STEPS: Final = 100_000  # elements looped over by one evaluation, in all
MAX_INT_BITS: Final = 1_024  # 2**1024 is just past the largest float: every JSON number fits
MAX_NUMBER_TEXT: Final = 400  # characters int()/float() read: no quadratic digit conversions
MAX_ROUND_DIGITS: Final = 400
DEFAULT_TIMEOUT_S: Final = 0.05
MAX_SET_COLLISIONS: Final = 64  # distinct items of one set (or keys of one dict) that share one hash value
CHECK_EVERY: Final = 256  # ticks (units of work, about a microsecond each) between two looks at the clock

RULE_NAMES: Final = ("state", "contact", "now")
TRIGGER_NAMES: Final = ("contact", "event", "now")


class ExpressionError(Exception):
    """An expression cannot be run, or failed while running; the message is for the template author."""


def too_large(what: str = "characters or items", limit: int = MAX_SIZE) -> ExpressionError:
    return ExpressionError(f"the result would be too large (over {limit:,} {what})")


def int_too_large() -> ExpressionError:
    return ExpressionError(f"a number would be too large (the limit is {MAX_INT_BITS} bits, about 1.8e308)")
