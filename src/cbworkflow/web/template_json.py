"""A template as a person edits it: its JSON laid out like the reference file (short objects on one line), and
text typed in the editor read back into a template, with every problem named by its field path (as the API's 422
names them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import ValidationError

from ..api.errors import describe_validation
from ..api.json_guard import json_problem
from ..models.templates import (
    EndNode,
    Node,
    NodeType,
    WorkflowTemplate,
)

MAX_JSON_CHARS = 2_000_000  # the body limit refuses most before this; a guard for a larger CBW_MAX_BODY_BYTES
SERVER_KEPT = ("tenant", "created_at", "updated_at", "trigger_errors")  # in what GET /api/workflows/{id} answers
NODE_TYPES = get_args(NodeType)
NODE_FIRST = ("type", "name", "description")
NODE_LAST = ("metadata", "transitions")


def editable_json(template: WorkflowTemplate) -> str:
    """What the editor shows: the fields an author writes, nodes in the order written, each node's settings with
    its type first and its transitions last, defaults left out (an end node keeps its end status)."""
    data: dict[str, Any] = {"name": template.name}
    if template.description is not None:
        data["description"] = template.description
    data["version"] = template.version
    data["start_node"] = template.start_node
    if template.tags:
        data["tags"] = template.tags
    if template.metadata:
        data["metadata"] = template.metadata
    data["nodes"] = {node_id: _node_json(node) for node_id, node in template.nodes.items()}
    if template.triggers:
        data["triggers"] = [t.model_dump(mode="json", exclude_defaults=True) for t in template.triggers]
    if template.goals:
        data["goals"] = [g.model_dump(mode="json", exclude_defaults=True) for g in template.goals]
    return pretty_json(data)


def pretty_json(value: Any, *, width: int = 100) -> str:
    """JSON as an author writes it (as in the reference template's file): the template and its `nodes` one entry
    a line, anything that fits in `width` columns on one line, the rest indented by two spaces."""
    return _pretty(value, 0, 0, width, expand=True)


def _pretty(value: Any, level: int, column: int, width: int, *, expand: bool = False) -> str:
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or not value or (not expand and column + len(flat) <= width):
        return flat
    pad = "  " * (level + 1)
    if isinstance(value, list):
        items = [pad + _pretty(item, level + 1, len(pad), width) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"
    lines = []
    for key, item in value.items():
        head = f"{pad}{json.dumps(key, ensure_ascii=False)}: "
        lines.append(head + _pretty(item, level + 1, len(head), width, expand=level == 0 and key == "nodes"))
    return "{\n" + ",\n".join(lines) + "\n" + "  " * level + "}"


def _node_json(node: Node) -> dict[str, Any]:
    dumped = node.model_dump(mode="json", exclude_defaults=True)
    if isinstance(node, EndNode):
        dumped["end_status"] = node.end_status
    first = {key: dumped[key] for key in NODE_FIRST if key in dumped}
    last = {key: dumped[key] for key in NODE_LAST if key in dumped}
    middle = {key: value for key, value in dumped.items() if key not in first and key not in last}
    return {**first, **middle, **last}


@dataclass
class Draft:
    """JSON typed into an editor: what it parsed to (None when it did not fit), and what stops it from saving."""

    text: str
    data: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def read_draft(text: str, *, template_id: str | None) -> Draft:
    """Parse the editor's JSON into a plain object. For an existing template (`template_id`), the fields the
    server keeps (`tenant`, times) and the template's own `id` are dropped, so the API's answer can be pasted."""
    draft = Draft(text)
    if len(text) > MAX_JSON_CHARS:
        draft.problems.append(f"The JSON is too long: at most {MAX_JSON_CHARS:,} characters.")
        return draft
    if not text.strip():
        draft.problems.append("The JSON is empty: type or paste a template.")
        return draft
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        draft.problems.append("The JSON is nested too deeply.")
        return draft
    except json.JSONDecodeError as exc:
        draft.problems.append(f"The JSON does not parse: line {exc.lineno}, column {exc.colno}: {exc.msg}.")
        return draft
    except ValueError as exc:
        draft.problems.append(f"The JSON does not parse: {exc}.")
        return draft
    problem = json_problem(text.encode("utf-8", "surrogatepass"))
    if problem:
        draft.problems.append(f"The JSON cannot be stored: {problem}.")
        return draft
    if not isinstance(data, dict):
        draft.problems.append("The JSON must be one object, in braces: { … }.")
        return draft
    if template_id is not None:
        for key in SERVER_KEPT:
            data.pop(key, None)
        if "id" in data:
            if data["id"] != template_id:
                draft.problems.append(
                    f"id: this editor changes template {template_id}; to copy it under another id, use Clone."
                )
                return draft
            del data["id"]
    draft.data = data
    return draft


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def model_problems(exc: ValidationError) -> list[str]:
    """Each field that does not fit the template model, with its path (`nodes.call.transitions`), as the API
    names them."""
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        found: dict[str, Any] = dict(error)
        loc = tuple(found.get("loc", ()))
        if len(loc) > 2 and loc[0] == "nodes" and loc[2] in NODE_TYPES:
            found["loc"] = loc[:2] + loc[3:]  # the union's tag is not a field the author wrote
        if found.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            found["loc"] = (*tuple(found.get("loc", ())), "type")
            found["type"], found["msg"] = "kind", "use one of " + ", ".join(NODE_TYPES)
        errors.append(found)
    _, _, fields = describe_validation(errors)
    return [f"{item['field']}: {item['message']}" for item in fields]
