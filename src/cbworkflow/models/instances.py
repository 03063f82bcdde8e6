"""Workflow instances: one contact's run through a template, holding a frozen copy of its nodes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp
from .events import Event
from .templates import Node


class InstanceStatus(StrEnum):
    """Where an instance is in its lifecycle (workflows.md § Instance lifecycle): `pending` (created, not started),
    `active` (at a task for a person or an automated action), `waiting` (at a wait, a webhook, or a decision that
    waits for a model or a person), `paused`, and the final `completed`, `failed` and `cancelled`."""

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
    """Body of `POST /api/instances`: enrol one contact in one template (404 for an unknown contact or template,
    422 for a template with validation errors)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "contact_id": "ada-lovelace",
                    "template_id": "county-outreach-v1",
                    "initial_state": {"call_attempts": 0},
                    "tags": ["spring-drive"],
                    "metadata": {"source": "county fair sign-up"},
                }
            ]
        }
    )

    contact_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """The id of the contact to enrol."""
    template_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """The id of the template to run; the instance freezes a copy of its current version."""
    initial_state: BoundedObject = Field(default_factory=dict)
    """The instance's `state` to begin with (any JSON object, at most 64 KiB as JSON); rules and placeholders
    read it as `state.key`."""
    tags: Tags = Field(default_factory=list)
    """Slugs that group instances (at most 100); duplicates are dropped."""
    metadata: BoundedObject = Field(default_factory=dict)
    """Any JSON object of your own (at most 64 KiB as JSON); the engine does not read it."""
    start: bool = False
    """True: start at once (enter the start node); false: the instance stays `pending` until `/start`."""


class TransitionRequest(RequestModel):
    """Body of `POST /api/instances/{id}/transition`: a person records the outcome of the current node."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "voicemail",
                    "state_updates": {"call_attempts": 1},
                    "note": "Left a message about Saturday's canvass.",
                    "expected_node": "initial_call",
                }
            ]
        }
    )

    outcome: Outcome
    """An outcome of the current node (a key of its `transitions`); another answers 422 listing the allowed ones."""
    state_updates: BoundedObject | None = None
    """Merged into the state first, as a JSON Merge Patch (`null` deletes a key); at most 64 KiB as JSON."""
    note: NoteText | None = None
    """A note about what happened (1 to 10,000 characters), kept with the outcome in the timeline."""
    expected_node: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The node the caller believes the instance is at; 409 when it is elsewhere (someone moved it first)."""
    actor: ActorName | None = None
    """Who it is done for (at most 200 characters); kept only as `data.on_behalf_of`, never as the event's actor."""


class StateUpdate(RequestModel):
    """Body of `POST /api/instances/{id}/state`: merged into the state as a JSON Merge Patch (RFC 7386)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"updates": {"door_notes": "Prefers texts; gave a mobile number.", "callback_at": None}}]
        }
    )

    updates: BoundedObject
    """The keys to set in the state; a key set to `null` is deleted, nested objects merge (at most 64 KiB as
    JSON)."""
    actor: ActorName | None = None
    """Who it is done for (at most 200 characters); kept only as `data.on_behalf_of`, never as the event's actor."""


class NoteCreate(RequestModel):
    """Body of `POST /api/instances/{id}/notes`: a note on the instance's timeline (event `user_note`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "Asked to be called back after 6 pm."}]})

    text: NoteText
    """The note, 1 to 10,000 characters."""
    actor: ActorName | None = None
    """Who it is written for (at most 200 characters); kept only as `data.on_behalf_of`, never as the event's
    actor."""


class ActorBody(RequestModel):
    """Optional body of start/pause/resume/cancel."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"actor": "Maria, phone bank lead", "reason": "Moved out of the county."}]}
    )

    actor: ActorName | None = None
    """Who it is done for (at most 200 characters); kept only as `data.on_behalf_of`, never as the event's actor."""
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    """Why (at most 1,000 characters); kept in the `instance_cancelled` event; start, pause and resume ignore it."""


class BulkContacts(RequestModel):
    """Which contacts a bulk enrolment takes: every filter given must match; none given means every contact."""

    ids: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]], Field(max_length=10_000)] = (
        Field(default_factory=list)
    )
    """These contacts (at most 10,000); every id must name a contact of the tenant. With `ids`, no other filter."""
    county: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """Only contacts in exactly this county."""
    tag: Slug | None = None
    """Only contacts with this tag."""
    organization: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """Only contacts of exactly this organisation."""

    @model_validator(mode="after")
    def _ids_alone(self) -> BulkContacts:
        if self.ids and (self.county or self.tag or self.organization):
            raise ValueError("give either ids or filters (county, tag, organization), not both")
        return self


class BulkEnrol(RequestModel):
    """Body of `POST /api/instances/bulk`: enrol every matching contact that has no unfinished instance of the
    template (pending, active, waiting or paused); the others are counted as skipped."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "template_id": "county-outreach-v1",
                    "contacts": {"county": "Adams"},
                    "initial_state": {"call_attempts": 0},
                    "start": True,
                }
            ]
        }
    )

    template_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """The template to enrol them in; it must have no validation errors."""
    contacts: BulkContacts = Field(default_factory=BulkContacts)
    """Which contacts; `{}` (the default) takes every contact of the tenant."""
    initial_state: BoundedObject = Field(default_factory=dict)
    """The state every new instance starts with (at most 64 KiB as JSON)."""
    tags: Tags = Field(default_factory=list)
    """Tags for every new instance."""
    start: bool = False
    """Start each new instance at once (else they wait, `pending`, for `/start`)."""


class BulkResult(ResponseModel):
    """What a bulk enrolment did (also the `result` of its job)."""

    enrolled: int
    """Instances created."""
    skipped: int
    """Contacts left out because they already had an unfinished instance of the template (or were deleted while
    a job ran)."""


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
    """The instance's id (12 hex characters)."""
    tenant: str
    """The tenant the instance belongs to."""
    contact_id: str
    """The id of the contact this instance runs for."""
    template_id: str
    """The id of the template it was created from."""
    template_version: str
    """The template version whose nodes it froze; later edits of the template never change this instance."""
    start_node: str
    """The node it enters when it starts (frozen with the nodes)."""
    current_node: str | None = None
    """The id of the node it is at; null until it starts. A finished instance keeps the node it finished at."""
    node_entered_at: Timestamp | None = None
    """When it entered `current_node` (UTC, ISO 8601): how long it has been there. Null until it starts."""
    status: InstanceStatus
    """Where it is in its lifecycle."""
    state: JSONObject = Field(default_factory=dict)
    """Data gathered along the way (`initial_state`, then every state update); rules and placeholders read it."""
    nodes: dict[str, Node]
    """The frozen copy of the template's nodes this instance runs on."""
    timeline: list[Event] = Field(default_factory=list)
    """Its events, oldest first; empty in lists (page them at `/api/instances/{id}/timeline`)."""
    tags: list[Slug] = Field(default_factory=list)
    """The instance's tags (slugs, no duplicates)."""
    metadata: JSONObject = Field(default_factory=dict)
    """Free-form data of your own, given when it was created."""
    created_at: Timestamp
    """When it was created (UTC, ISO 8601)."""
    updated_at: Timestamp
    """When it last changed (UTC, ISO 8601)."""
    started_at: Timestamp | None = None
    """When it started (UTC, ISO 8601); null while `pending`."""
    completed_at: Timestamp | None = None
    """When it finished: completed, failed or cancelled (UTC, ISO 8601); null while unfinished."""
    wake_at: Timestamp | None = None
    """When the worker next acts on it by itself (a wait ends, an automated step runs) (UTC, ISO 8601); null when
    nothing is scheduled."""
    waiting_for: str | None = None
    """While `waiting`, what for: `timer`, `event:<name>`, `manual_decision`, `ai_decision`, `ai_confirm`,
    `webhook`...; null otherwise."""
    end_status: str | None = None
    """Once completed, the `end_status` of the end node it reached (e.g. `success`, `declined`); null before."""
    paused_status: InstanceStatus | None = None
    """While `paused`, the status it had before (`resume` puts it back); null otherwise."""
    held_by: str | None = None
    """The id of the token that claimed it as a task, while the lease holds; null when nobody holds it."""
    lease_expires_at: Timestamp | None = None
    """When the claim on the task runs out and others can claim it (UTC, ISO 8601); null when not held."""
    task_since: Timestamp | None = None
    """Since when it has waited for a person, as a task of the work queue (UTC, ISO 8601); null when it is not a
    task."""
    suggestion: JSONObject | None = None
    """A model's choice awaiting a person's confirmation, `{"outcome", "reason"}`; null otherwise."""
    retries: int | None = None
    """How many come-back-later tries the current node has had (its `retry`); null before the first."""
    revision: int = 0
    """A counter the server raises with every change of the instance."""
    enrol_key: str | None = Field(default=None, exclude=True)
    """`<template id>:<contact id>` while a trigger-started instance is unfinished: the store keeps these unique in
    the tenant, so one contact is never enrolled twice by concurrent triggers. Not shown by the API."""

    def held_by_token(self, token_id: str, now: datetime) -> bool:
        """True while `token_id` holds this instance as a task (claimed, lease not run out)."""
        return self.held_by == token_id and (self.lease_expires_at is None or self.lease_expires_at > now)


def task_action(instance: WorkflowInstance) -> str | None:
    """The action of the node a task waits at (what the work queue's `action` filter matches), or None."""
    if instance.task_since is None or instance.current_node is None:
        return None
    action = getattr(instance.nodes.get(instance.current_node), "action", None)
    return action if isinstance(action, str) else None
