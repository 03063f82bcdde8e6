"""docs/expressions.md is what template authors read: every example in it runs, and it names every helper and
method the sandbox offers (a new helper without documentation fails here)."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.engine.sandbox import HELPERS, METHODS, RULE_NAMES, ExpressionError, evaluate, static_problem

DOC = Path(__file__).parents[2] / "docs/expressions.md"
TEXT = DOC.read_text()
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def json_blocks() -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", TEXT, re.S)]


def variables() -> dict[str, Any]:
    (found,) = [block for block in json_blocks() if set(block) == {"state", "contact"}]
    return dict(found)


def rows(kind: str) -> list[tuple[str, str]]:
    """The (expression, expected) pairs of every table headed `| expression | <kind> |`."""
    found: list[tuple[str, str]] = []
    for table in re.findall(rf"^\| expression \| {kind} \|\n\|---\|---\|\n((?:\|.*\|\n)+)", TEXT, re.M):
        for line in table.splitlines():
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert len(cells) == 2, line
            expression, expected = (re.fullmatch(r"`(.*)`", cell, re.S) for cell in cells)
            assert expression, f"cells must be `code`: {line}"
            assert expected, f"cells must be `code`: {line}"
            found.append((expression[1].replace("\\|", "|"), expected[1].replace("\\|", "|")))
    return found


VALUES, ERRORS = rows("gives"), rows("error")


def test_the_page_has_examples() -> None:
    assert len(VALUES) > 60
    assert len(ERRORS) > 10


@pytest.mark.parametrize(("expression", "expected"), VALUES, ids=[e for e, _ in VALUES])
def test_every_example_gives_what_the_page_says(expression: str, expected: str) -> None:
    assert static_problem(expression, RULE_NAMES) is None
    value = evaluate(expression, variables(), now=NOW)
    wanted = ast.literal_eval(expected)
    assert value == wanted
    assert type(value) is type(wanted)


@pytest.mark.parametrize(("expression", "message"), ERRORS, ids=[e for e, _ in ERRORS])
def test_every_error_example_fails_with_the_sentence_shown(expression: str, message: str) -> None:
    problem = static_problem(expression, RULE_NAMES)
    if problem is not None:  # refused before it runs: validation says the same
        assert message in problem[1]
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression, variables(), now=NOW)
    assert message in str(caught.value)


def test_the_node_example_is_a_rule_that_routes_the_reference_notes() -> None:
    node = next(block for block in json_blocks() if block.get("type") == "decision")
    expression = node["rule"]["expression"]
    assert static_problem(expression, RULE_NAMES) is None
    outcome = evaluate(expression, variables(), now=NOW)
    assert outcome in node["transitions"]


def section(title: str) -> str:
    start = TEXT.index(f"## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end > 0 else None]


def test_every_helper_is_documented() -> None:
    helpers = section("Helpers")
    missing = [name for name in HELPERS if not re.search(rf"`{name}\(", helpers)]
    assert missing == []


def test_every_method_is_documented() -> None:
    methods = section("Methods")
    words = set(re.findall(r"[a-z_]+", methods))
    assert sorted(set(METHODS) - words) == []
