"""Timeline events: the append-only audit trail of every instance (and of contact-level changes)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Timestamp
from .templates import TriggerError


class EventType(StrEnum):
    """Every kind of timeline event (workflows.md § Events): instance lifecycle (`instance_*`), nodes entered and
    left, actions and decisions, state and tag changes, notes, waits, and custom events received."""

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
    INSTANCE_MIGRATED = "instance_migrated"  # moved onto a newer version of its template
    GOAL_REACHED = "goal_reached"  # a template's goal happened for the contact: the instance ended `goal:<id>`
    CONTACT_CREATED = "contact_created"  # contact-level events carry `contact_id` and no `instance_id`
    CONTACT_UPDATED = "contact_updated"
    CONTACT_TAG_ADDED = "contact_tag_added"
    CONTACT_OPTED_OUT = "contact_opted_out"
    CONTACT_OPTED_IN = "contact_opted_in"
    DELIVERY_DISABLED = "delivery_disabled"  # a webhook subscription was disabled (data: subscription_id, reason)


SYSTEM_ACTOR = "system"


class Event(ResponseModel):
    """One timeline entry. `instance_id` is null for contact-level events (a contact's tags)."""

    id: str
    """The event's id (12 hex characters); the stream's `Last-Event-ID` resumes after it."""
    type: EventType
    """What happened."""
    timestamp: Timestamp
    """When it happened (UTC, ISO 8601)."""
    node_id: str | None = None
    """The node it happened at; null for events not tied to a node."""
    actor: str
    """Who did it: `system` (the engine), `ai` (a model's decision), or the id of the token that made the request.
    A request's own `actor` field is kept only as `data.on_behalf_of`."""
    data: JSONObject = Field(default_factory=dict)
    """Details of the event, which depend on its type (e.g. `outcome` on `node_exited`, `end_status` on
    `instance_completed`, `on_behalf_of`, `reason`)."""
    message: str = ""
    """A one-line account of the event in words a person reads (e.g. `Entered Door knock`)."""
    instance_id: str | None = None
    """The instance the event belongs to; null for contact-level events."""
    contact_id: str | None = None
    """The contact the event is about."""
    template_id: str | None = None
    """The template of the event's instance; null for contact-level events."""
    sequence: int | None = None
    """The event's place in its tenant's outbox: 1, 2, 3… in the order the changes that made them committed, with
    no gaps. The live stream's `id:` and `Last-Event-ID`, and webhook deliveries, follow it. Null only while the
    event is being written."""


class EventPost(RequestModel):
    """Body of `POST /api/events`: a custom event that resumes instances waiting for it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "rsvp_received", "contact_id": "ada-lovelace", "data": {"event_date": "2026-10-12"}}]
        }
    )

    name: Slug
    """The event's name, a slug: instances at a wait node whose condition is `{"type": "event", "event": name}`
    are resumed (outcome `received`); templates' `event` triggers and goals with this name fire for the contact."""
    contact_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    """The contact it happened to: only its waiting instances are resumed, and triggers and goals fire for it (404
    if there is no such contact). Without it (and without `instance_id`) the event is the tenant's: every
    waiting instance is resumed, and no trigger or goal fires (they need a contact)."""
    instance_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    """Only this instance is resumed (404 if there is no such instance; 422 if it is not an instance of
    `contact_id`); triggers and goals fire for its contact."""
    data: BoundedObject = Field(default_factory=dict)
    """Any JSON object (at most 64 KiB as JSON), kept in the `event_received` event of each instance resumed."""


class GoalResult(ResponseModel):
    """An instance a goal completed."""

    instance_id: str
    """The instance, now `completed` with `end_status` `goal:<goal>`."""
    template_id: str
    """Its template, whose goal it was."""
    goal: str
    """The goal's id."""


class EventResult(ResponseModel):
    """The answer of `POST /api/events`: what the event touched, all in one transaction."""

    name: str
    """The event's name, as posted."""
    resumed: list[str]
    """The ids of the instances it resumed (at most 1,000 per request); empty when none was waiting for it."""
    started: list[str] = Field(default_factory=list)
    """The ids of the instances its `event` triggers started for the contact."""
    goals_reached: list[GoalResult] = Field(default_factory=list)
    """The instances the templates' goals completed (`end_status` `goal:<id>`)."""
    trigger_errors: list[TriggerError] = Field(default_factory=list)
    """Triggers and goals that could not run for this event (a `where` that failed, a template that cannot
    enrol); each is also kept on its template (`trigger_errors` of `GET /api/workflows/{id}`)."""
