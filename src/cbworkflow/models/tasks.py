"""The work queue's task: an instance waiting for a person, in the shape api.md § Work queue gives."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from .common import JSONObject, RequestModel, ResponseModel, Slug, Timestamp

Filter = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class TaskQuery(RequestModel):
    """Body of `POST /api/tasks/claim`: which kind of task the caller wants next (all optional)."""

    action: Filter | None = None
    template_id: Filter | None = None
    county: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    tag: Slug | None = None


class Suggestion(ResponseModel):
    outcome: str
    reason: str = ""


class Task(ResponseModel):
    instance_id: str
    template_id: str
    node_id: str
    node: JSONObject = Field(description="the node's type, name, and action and action_config, or rule")
    outcomes: list[str]
    contact: JSONObject | None
    state: JSONObject
    suggestion: Suggestion | None = None
    held_by: str | None = None
    lease_expires_at: Timestamp | None = None
    since: Timestamp


def node_summary(node: Any) -> dict[str, Any]:
    """What a person needs to see of a task's node."""
    shown = {"type": node.type, "name": node.name, "description": node.description}
    for key in ("action", "action_config", "rule"):
        if hasattr(node, key):
            shown[key] = getattr(node, key)
    return shown
