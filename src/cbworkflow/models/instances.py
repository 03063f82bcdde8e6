"""Workflow instances: one contact's run through a template, holding a frozen copy of its nodes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp
from .events import Event
from .templates import Node


class InstanceStatus(StrEnum):
    """Where an instance is in its lifecycle (workflows.md § Instance lifecycle)."""

    PENDING = "pending"  # created, not started
    ACTIVE = "active"  # at a human task or an automated action
    PAUSED = "paused"  # stopped by a person; resume puts it back
    WAITING = "waiting"  # at a wait, a webhook, or a decision that waits for a model or a person
    COMPLETED = "completed"  # reached an end node
    FAILED = "failed"  # an error the template has no outcome for
    CANCELLED = "cancelled"  # cancelled, or its contact was deleted with cascade


TERMINAL = frozenset({InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.CANCELLED})
MOVABLE = frozenset({InstanceStatus.ACTIVE, InstanceStatus.WAITING})  # /transition is allowed in these

Outcome = Annotated[str, StringConstraints(min_length=1, max_length=64)]
NoteText = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
ActorName = Annotated[str, StringConstraints(max_length=200)]
NodeId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class InstanceCreate(RequestModel):
    """Body of `POST /api/instances`."""

    contact_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    template_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    initial_state: BoundedObject = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)
    metadata: BoundedObject = Field(default_factory=dict)
    start: bool = False


class TransitionRequest(RequestModel):
    """Body of `POST /api/instances/{id}/transition`: a person records the outcome of the current node."""

    outcome: Outcome
    state_updates: BoundedObject | None = None
    note: NoteText | None = None
    expected_node: Annotated[str, StringConstraints(max_length=64)] | None = None
    actor: ActorName | None = None  # kept only as data.on_behalf_of


class StateUpdate(RequestModel):
    """Body of `POST /api/instances/{id}/state`: merged into the state as a JSON Merge Patch (RFC 7386)."""

    updates: BoundedObject
    actor: ActorName | None = None


class NoteCreate(RequestModel):
    """Body of `POST /api/instances/{id}/notes`."""

    text: NoteText
    actor: ActorName | None = None


class ActorBody(RequestModel):
    """Optional body of start/pause/resume/cancel."""

    actor: ActorName | None = None
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class RetryRequest(RequestModel):
    """Optional body of `POST /api/instances/{id}/retry`: a failed instance enters again the node where it failed."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"state_updates": {"households": 3}}]})

    state_updates: BoundedObject | None = Field(
        default=None, description="merged into the state first, as a JSON Merge Patch (`null` deletes a key)"
    )
    actor: ActorName | None = Field(default=None, description="who it is done for; kept only as data.on_behalf_of")


class MoveRequest(RequestModel):
    """Body of `POST /api/instances/{id}/move` (admins): put the instance at another node of its frozen graph."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"node": "send_postcard", "reason": "asked by email for a postcard"}]}
    )

    node: NodeId = Field(description="a node of the instance's frozen graph (`nodes`); entered as usual")
    reason: Reason = Field(description="why, for the timeline (1 to 500 characters)")
    actor: ActorName | None = Field(default=None, description="who it is done for; kept only as data.on_behalf_of")


class WorkflowInstance(ResponseModel):
    """An instance as stored and returned. Lists leave `timeline` empty: page it at `/timeline`."""

    id: str
    tenant: str
    contact_id: str
    template_id: str
    template_version: str
    start_node: str
    current_node: str | None = None
    status: InstanceStatus
    state: JSONObject = Field(default_factory=dict)
    nodes: dict[str, Node]
    timeline: list[Event] = Field(default_factory=list)
    tags: list[Slug] = Field(default_factory=list)
    metadata: JSONObject = Field(default_factory=dict)
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    wake_at: Timestamp | None = None
    waiting_for: str | None = None
    end_status: str | None = None
    paused_status: InstanceStatus | None = None
    held_by: str | None = None
    lease_expires_at: Timestamp | None = None
    task_since: Timestamp | None = None  # set while the instance waits for a person (a task of the work queue)
    suggestion: JSONObject | None = None  # an AI decision awaiting a person's confirmation: {"outcome", "reason"}
    revision: int = 0

    def held_by_token(self, token_id: str, now: datetime) -> bool:
        """True while `token_id` holds this instance as a task (claimed, lease not run out)."""
        return self.held_by == token_id and (self.lease_expires_at is None or self.lease_expires_at > now)


def task_action(instance: WorkflowInstance) -> str | None:
    """The action of the node a task waits at (what the work queue's `action` filter matches), or None."""
    if instance.task_since is None or instance.current_node is None:
        return None
    action = getattr(instance.nodes.get(instance.current_node), "action", None)
    return action if isinstance(action, str) else None
