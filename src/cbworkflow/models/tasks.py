"""The work queue's task: an instance waiting for a person, in the shape api.md § Work queue gives."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from .common import JSONObject, RequestModel, ResponseModel, Slug, Timestamp

Filter = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class TaskQuery(RequestModel):
    """Body of `POST /api/tasks/claim`: which kind of task the caller wants next (all optional)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"action": "phone_call", "template_id": "county-outreach-v1", "county": "Riverside"}]
        }
    )

    action: Filter | None = None
    """Only tasks at an action node with this `action` (e.g. `phone_call`, `door_canvass`)."""
    template_id: Filter | None = None
    """Only tasks of instances of this template."""
    county: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """Only tasks whose contact's `county` is exactly this."""
    tag: Slug | None = None
    """Only tasks whose contact has this tag."""


class Suggestion(ResponseModel):
    """A model's choice for an AI decision with `confirm`, waiting for a person to confirm or overrule it."""

    outcome: str
    """The outcome the model chose."""
    reason: str = ""
    """The model's short reason for it; empty when it gave none."""


class Task(ResponseModel):
    """An instance waiting for a person: at a human action, a manual decision, or an AI decision to confirm.
    Record the outcome with `POST /api/instances/{instance_id}/transition`."""

    instance_id: str
    """The id of the instance waiting."""
    template_id: str
    """The id of the instance's template."""
    node_id: str
    """The id of the node it waits at."""
    node: JSONObject = Field(description="the node's type, name, and action and action_config, or rule")
    outcomes: list[str]
    """The outcomes a person may record here, sorted."""
    contact: JSONObject | None
    """The contact, as `GET /api/contacts/{id}` shows it; null if it no longer exists."""
    state: JSONObject
    """The instance's state."""
    suggestion: Suggestion | None = None
    """The model's suggestion, for an AI decision awaiting confirmation; null otherwise."""
    held_by: str | None = None
    """The id of the token that holds the task; null when it is open."""
    lease_expires_at: Timestamp | None = None
    """When the hold runs out and the task is open again (UTC, ISO 8601); null when it is not held."""
    since: Timestamp
    """Since when it has waited for a person (UTC, ISO 8601); the queue is oldest first."""


def node_summary(node: Any) -> dict[str, Any]:
    """What a person needs to see of a task's node."""
    shown = {"type": node.type, "name": node.name, "description": node.description}
    for key in ("action", "action_config", "rule"):
        if hasattr(node, key):
            shown[key] = getattr(node, key)
    return shown
