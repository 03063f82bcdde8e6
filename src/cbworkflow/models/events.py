"""Timeline events: the append-only audit trail of every instance (and of contact-level changes)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Timestamp


class EventType(StrEnum):
    """Every kind of timeline event (workflows.md § Events)."""

    INSTANCE_CREATED = "instance_created"
    INSTANCE_STARTED = "instance_started"
    INSTANCE_PAUSED = "instance_paused"
    INSTANCE_RESUMED = "instance_resumed"
    INSTANCE_COMPLETED = "instance_completed"
    INSTANCE_FAILED = "instance_failed"
    INSTANCE_CANCELLED = "instance_cancelled"
    NODE_ENTERED = "node_entered"
    NODE_EXITED = "node_exited"
    ACTION_STARTED = "action_started"
    ACTION_COMPLETED = "action_completed"
    ACTION_FAILED = "action_failed"
    DECISION_EVALUATED = "decision_evaluated"
    DECISION_MANUAL_INPUT = "decision_manual_input"
    STATE_UPDATED = "state_updated"
    TAG_ADDED = "tag_added"
    TAG_REMOVED = "tag_removed"
    USER_NOTE = "user_note"
    USER_ACTION = "user_action"
    WAIT_STARTED = "wait_started"
    WAIT_COMPLETED = "wait_completed"
    EVENT_RECEIVED = "event_received"
    INSTANCE_RETRIED = "instance_retried"  # a failed instance entered again the node where it failed
    INSTANCE_MOVED = "instance_moved"  # an admin put the instance at another node (data: moved_from, reason)


SYSTEM_ACTOR = "system"


class Event(ResponseModel):
    """One timeline entry. `instance_id` is null for contact-level events (a contact's tags)."""

    id: str
    type: EventType
    timestamp: Timestamp
    node_id: str | None = None
    actor: str
    data: JSONObject = Field(default_factory=dict)
    message: str = ""
    instance_id: str | None = None
    contact_id: str | None = None
    template_id: str | None = None


class EventPost(RequestModel):
    """Body of `POST /api/events`: a custom event that resumes instances waiting for it."""

    name: Slug
    contact_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    instance_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    data: BoundedObject = Field(default_factory=dict)


class EventResult(ResponseModel):
    name: str
    resumed: list[str]
