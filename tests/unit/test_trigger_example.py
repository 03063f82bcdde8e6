"""The example of docs/triggers-and-goals.md loads and validates clean."""

from __future__ import annotations

import json
from pathlib import Path

from cbworkflow.models.templates import TemplateCreate
from cbworkflow.validation import validate_template

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "donor-thanks.json"


def test_the_documented_example_is_valid() -> None:
    body = TemplateCreate.model_validate(json.loads(EXAMPLE.read_text()))
    report = validate_template(body.start_node, body.nodes, body.triggers, body.goals)
    assert (report.valid, report.errors, report.warnings) == (True, [], [])
    assert [g.id for g in body.goals] == ["volunteered", "big-gift"]
    assert len(body.triggers) == 2
