"""Splits and retries without a store: the split's shares over many instances, its determinism, and what
validation says of a split or a retry that cannot work."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from cbworkflow.engine.entering import split_outcome
from cbworkflow.ids import new_id
from cbworkflow.models.templates import Node
from cbworkflow.validation import validate_template

NODES: TypeAdapter[dict[str, Node]] = TypeAdapter(dict[str, Node])


def test_a_70_30_split_over_10000_instances_lands_within_2_percent_and_again_the_same() -> None:
    ids = [new_id() for _ in range(10_000)]
    first = [split_outcome(i, "split", {"a": 70, "b": 30}) for i in ids]
    share = first.count("a") / len(first)
    assert 0.68 <= share <= 0.72, share
    assert [split_outcome(i, "split", {"b": 30, "a": 70}) for i in ids] == first  # key order does not matter
    other_node = [split_outcome(i, "other", {"a": 70, "b": 30}) for i in ids]
    assert other_node != first  # each split node draws on its own


def test_three_way_weights_and_a_single_branch() -> None:
    ids = [new_id() for _ in range(10_000)]
    picks = [split_outcome(i, "s", {"x": 1, "y": 1, "z": 2}) for i in ids]
    assert abs(picks.count("z") / len(picks) - 0.5) <= 0.02
    assert {split_outcome(i, "s", {"only": 5}) for i in ids[:100]} == {"only"}


def codes(nodes: dict[str, Any]) -> set[str]:
    report = validate_template("start", NODES.validate_python(nodes), [], [])
    return {item.code for item in report.errors}


def test_a_split_whose_weights_are_not_its_outcomes_is_refused() -> None:
    nodes = {
        "start": {"type": "split", "weights": {"a": 1, "c": 1}, "transitions": {"a": "end", "b": "end"}},
        "end": {"type": "end"},
    }
    assert "split_weights_mismatch" in codes(nodes)
    nodes["start"]["weights"] = {"a": 1, "b": 3}
    assert codes(nodes) == set()


def test_a_retry_on_an_outcome_the_node_lacks_or_with_a_bad_wait_is_refused() -> None:
    nodes: dict[str, Any] = {
        "start": {
            "type": "action",
            "action": "phone_call",
            "retry": {"outcomes": ["busy"], "after": "P2D", "max": 3},
            "transitions": {"no_answer": "end"},
        },
        "end": {"type": "end"},
    }
    assert "retry_invalid" in codes(nodes)
    nodes["start"]["retry"] = {"outcomes": ["no_answer"], "after": "two days", "max": 3}
    assert "retry_invalid" in codes(nodes)
    nodes["start"]["retry"]["after"] = "2d"
    assert codes(nodes) == set()
