"""Workflow templates: definitions of outreach graphs (what a workflow is, not a run of it).

Node fields are typed loosely on purpose: a template with a missing `action` or a malformed `rule` is still a
valid *draft* that can be saved; `validation.validate_template` reports what is wrong with it. Only the shape
(node `type`, field names, JSON types) is enforced when a template is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp
from .contact_rules import ContactHours

SemVer = Annotated[str, StringConstraints(pattern=r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")]
TemplateName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
NodeType = Literal["action", "decision", "wait", "webhook", "split", "end"]


class _NodeBase(BaseModel):
    """What every node has: a display name and description, metadata, and its transitions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    """The node's display name, shown to people in tasks, timelines and diagrams (at most 200 characters)."""
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    """What the node is for, in words for the people doing it (at most 10,000 characters)."""
    metadata: BoundedObject = Field(default_factory=dict)
    """Any JSON object of the template author's (at most 64 KiB as JSON); the engine does not read it."""
    transitions: dict[str, str] = Field(default_factory=dict)
    """Outcome name (a slug) to the id of the node to go to next; the keys are the node's outcomes. An end node
    has none."""


class RetryPolicy(BaseModel):
    """Come back later: when one of `outcomes` is recorded, the instance stays at the node and the step becomes a
    task (or runs) again after `after`, up to `max` times; the outcome after the last follows its transition."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    outcomes: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]], Field(min_length=1)]
    """The outcomes that mean "try again later", e.g. `not_home`, `no_answer` (each an outcome of the node)."""
    after: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """How long to wait before the next try: an ISO 8601 duration (`P2D`) or `2d`, `6h`, `30m`."""
    max: Annotated[int, Field(ge=1, le=100)]
    """How many tries again at most (1 to 100)."""


class ActionNode(_NodeBase):
    """A step someone (or an executor) performs: a call, a door knock, a text."""

    type: Literal["action"]
    """Always `action`."""
    action: str | None = None
    """What to do, e.g. `phone_call`, `door_canvass`, `sms`, `email`, `mail`, `webhook` (required for the template
    to validate). When the deployment has an executor for it the worker runs it; otherwise it is a task for a
    person, who records the outcome with `/transition`."""
    action_config: BoundedObject = Field(default_factory=dict)
    """Settings of the action, as its executor reads them (e.g. `message` for `sms`, `subject` and `body` for
    `email`); may hold placeholders such as `{contact.name}`. At most 64 KiB as JSON."""
    retry: RetryPolicy | None = None
    """Come-back-later tries: `{"outcomes": ["not_home", "no_answer"], "after": "P2D", "max": 3}`; each try again
    is a `wait_started` event with `data.retry` (its round)."""


class SplitNode(_NodeBase):
    """An A/B split: each instance takes one outcome at once, chosen with probability proportional to its weight,
    and always the same one for the same instance (it is worked out from the instance's id and the node's id)."""

    type: Literal["split"]
    """Always `split`."""
    weights: Annotated[dict[str, Annotated[int, Field(ge=1, le=1_000_000)]], Field(max_length=100)] = Field(
        default_factory=dict
    )
    """Outcome to a positive whole weight, e.g. `{"a": 70, "b": 30}`; the keys must be the keys of `transitions`."""


class DecisionNode(_NodeBase):
    """A branch chosen by a rule: heuristic expression, AI model, or a person."""

    type: Literal["decision"]
    """Always `decision`."""
    rule: BoundedObject | None = None
    """How the outcome is chosen: `{"type": "heuristic", "expression": ...}`, `{"type": "ai", "prompt": ...,
    "fallback"?, "confirm"?, "model"?}` or `{"type": "manual", "prompt"?}` (see HeuristicRule, AIRule,
    ManualRule). Stored as given; validation reports a missing or malformed rule."""


class WaitNode(_NodeBase):
    """A pause: for a duration, until a time, or until an event arrives."""

    type: Literal["wait"]
    """Always `wait`."""
    wait_condition: BoundedObject | None = None
    """When the wait ends: `{"type": "duration", "duration": "P3D"}` (ISO 8601, or `3d`, `2h`, `30m`, `45s`) or
    `{"type": "until", "until": "2026-11-03T08:00:00-05:00"}` (outcome `elapsed`), or `{"type": "event", "event":
    "rsvp_received", "timeout"?: "P7D"}` (outcome `received`, or `timeout`). Stored as given; validation checks it."""


class WebhookNode(_NodeBase):
    """An outbound HTTP call whose answer picks the outcome."""

    type: Literal["webhook"]
    """Always `webhook`."""
    webhook_url: str | None = None
    """The http or https URL to call (required for the template to validate); may hold placeholders in its path
    and query, not in its host."""
    webhook_method: str = "POST"
    """The HTTP method: GET, POST, PUT, PATCH or DELETE."""
    webhook_headers: Annotated[dict[str, Annotated[str, StringConstraints(max_length=8192)]], Field(max_length=50)] = (
        Field(default_factory=dict)
    )
    """Headers to send (at most 50, each value at most 8,192 characters); values may hold placeholders."""
    webhook_body: Any = None
    """The JSON body to send (placeholders allowed); null sends none."""
    timeout_s: float = 10
    """Seconds each attempt may take before it counts as failed."""
    max_attempts: int = 5
    """How many times to try the call before taking the `failure` outcome."""


class EndNode(_NodeBase):
    """The end of a path: entering it completes the instance."""

    type: Literal["end"]
    """Always `end`."""
    end_status: str = "success"
    """A slug saying how the path ended (e.g. `success`, `declined`), copied to the instance's `end_status`."""


Node = Annotated[ActionNode | DecisionNode | WaitNode | WebhookNode | SplitNode | EndNode, Field(discriminator="type")]


class HeuristicRule(BaseModel):
    """A decision rule evaluated at once when the node is entered: a sandboxed Python expression."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    type: Literal["heuristic"]
    """Always `heuristic`."""
    expression: Annotated[str, StringConstraints(min_length=1)]
    """A Python expression over `state`, `contact` and `now` (aware UTC) that returns an outcome name, or a bool
    taken as outcome `true` / `false`; e.g. `"text" if state.prefers_text else "mail"`."""


class AIRule(BaseModel):
    """A decision rule a model answers: it picks one of the node's outcomes from the rendered prompt."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    type: Literal["ai"]
    """Always `ai`."""
    prompt: Annotated[str, StringConstraints(min_length=1)]
    """What to ask the model; placeholders such as `{state.door_notes}` and `{contact.name}` are filled in."""
    fallback: str | None = None
    """The outcome to take when the model fails or gives no allowed answer; null: wait for a person instead."""
    confirm: bool = False
    """True: the model's choice is only a suggestion, shown in the task, and a person decides."""
    model: str | None = None
    """The model to ask; null: the one in the server's settings."""


class ManualRule(BaseModel):
    """A decision a person makes: the instance waits in the work queue until someone records an outcome."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    type: Literal["manual"]
    """Always `manual`."""
    prompt: str | None = None
    """The question shown to the person deciding; may hold placeholders."""


Rule = Annotated[HeuristicRule | AIRule | ManualRule, Field(discriminator="type")]


class Trigger(BaseModel):
    """Starts instances by itself; evaluated by the engine."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    on: Literal["contact_created", "tag_added", "event"]
    """What enrols a contact: its creation, a tag added to it, or a custom event (`POST /api/events`)."""
    tag: Slug | None = None
    """For `tag_added`: the tag that enrols the contact."""
    event: str | None = None
    """For `event`: the name of the custom event that enrols the contact."""
    where: str | None = None
    """A heuristic expression over `contact` (and `event` for custom events) that must be true; null: always."""
    reenter: bool = False
    """True: enrol the contact even when it already has an unfinished instance of this template."""


GoalId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,58}$")]
"""A goal's id: a slug short enough that `goal:<id>` fits an end status (64 characters)."""


class Goal(BaseModel):
    """An exit that stops the flow: when its event happens for a contact, every unfinished instance of the template
    for that contact is completed at once with `end_status` `goal:<id>` (workflows.md § Goals)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    id: GoalId
    """The goal's id, a slug of at most 59 characters, unique in the template; instances end `goal:<id>`."""
    on: Literal["event", "tag_added", "contact_created"]
    """What reaches the goal: a custom event (`POST /api/events`, or an `emit_event` step), a tag added to the
    contact, or the contact's creation."""
    event: str | None = None
    """For `event`: the name of the custom event."""
    tag: Slug | None = None
    """For `tag_added`: the tag."""
    where: str | None = None
    """A heuristic expression over `contact` and `event` (`event.name`, `event.data`) that must be true; null:
    always."""


EMIT_EVENT = "emit_event"
"""The action of the built-in `event` executor: always automatic, whatever the deployment's executors are."""


class EmitEventConfig(BaseModel):
    """The `action_config` of an `emit_event` action: the custom event it raises, as `POST /api/events` would."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    event: Slug
    """The custom event's name."""
    data: BoundedObject = Field(default_factory=dict)
    """The event's data (placeholders such as `{contact.name}` in its strings are filled in)."""
    to: Literal["contact", "tenant"] = "contact"
    """`contact`: the instance's contact (its waiting instances, triggers and goals); `tenant`: every instance of
    the tenant waiting for the event."""


class TriggerError(BaseModel):
    """A trigger or goal that could not run for a contact (its `where` failed, or the template cannot enrol)."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    at: Timestamp
    """When it happened (UTC, ISO 8601)."""
    kind: Literal["trigger", "goal"]
    """A trigger (which enrols) or a goal (which completes)."""
    which: str
    """The trigger's number in `triggers` (1 for the first), or the goal's id."""
    on: str
    """What it listens for (`contact_created`, `tag_added`, `event`)."""
    message: str
    """What went wrong, in words the template's author can act on."""
    contact_id: str | None = None
    """The contact it was evaluated for."""


class TemplateHooks(BaseModel):
    """What a template listens for (its triggers and goals), read for every contact change without its graph."""

    template_id: str
    triggers: list[Trigger] = Field(default_factory=list)
    goals: list[Goal] = Field(default_factory=list)
    trigger_errors: list[TriggerError] = Field(default_factory=list)


def hooks_of(triggers: list[Trigger], goals: list[Goal]) -> dict[str, Any] | None:
    """What a store keeps of a template's triggers and goals beside its body; None when it has neither."""
    if not triggers and not goals:
        return None
    return {
        "triggers": [t.model_dump(mode="json") for t in triggers],
        "goals": [g.model_dump(mode="json") for g in goals],
    }


class TemplateFields(RequestModel):
    """What a template author writes (the JSON of `examples/county-outreach-v1.json`)."""

    name: TemplateName
    """The template's display name, 1 to 200 characters (spaces around it are dropped)."""
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    """What the workflow is for (at most 10,000 characters)."""
    version: SemVer = "1.0.0"
    """A semantic version `MAJOR.MINOR.PATCH`; instances record the version they were created from."""
    start_node: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The id of the node an instance enters when it starts; a template without one is a draft that cannot run."""
    nodes: Annotated[dict[str, Node], Field(max_length=2000)]
    """The graph: node id (a slug) to node, at most 2,000 nodes. Each node's `type` says which fields it has."""
    triggers: list[Trigger] = Field(default_factory=list)
    """Rules that enrol contacts in this template by themselves."""
    goals: list[Goal] = Field(default_factory=list)
    """Exits that complete every unfinished instance of the template for a contact when their event happens."""
    contact_hours: ContactHours | None = None
    """When this template's texts and calls may reach a person, in their local time; absent: the tenant's
    (`GET /api/tenants/{id}/settings`), by default every day 09:00 to 20:00."""
    tags: Tags = Field(default_factory=list)
    """Slugs that group templates (at most 100); duplicates are dropped."""
    metadata: BoundedObject = Field(default_factory=dict)
    """Any JSON object of the author's (at most 64 KiB as JSON)."""


class TemplateCreate(TemplateFields):
    """Body of `POST /api/workflows`; `id` is generated (12 hex chars) when absent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "welcome-call",
                    "name": "Welcome call",
                    "description": "Thank a new volunteer by phone; text them if nobody answers.",
                    "version": "1.0.0",
                    "start_node": "call",
                    "nodes": {
                        "call": {
                            "type": "action",
                            "name": "Welcome call",
                            "action": "phone_call",
                            "action_config": {"script_id": "welcome_v1"},
                            "transitions": {"answered": "welcomed", "no_answer": "text"},
                        },
                        "text": {
                            "type": "action",
                            "name": "Welcome text",
                            "action": "sms",
                            "action_config": {"message": "Hi {contact.name}, welcome aboard! Reply STOP to opt out."},
                            "transitions": {"sent": "welcomed", "failed": "not_reached"},
                        },
                        "welcomed": {"type": "end", "name": "Welcomed", "end_status": "success"},
                        "not_reached": {"type": "end", "name": "Not reached", "end_status": "failed"},
                    },
                    "triggers": [{"on": "tag_added", "tag": "new-volunteer"}],
                    "tags": ["volunteers"],
                }
            ]
        }
    )

    id: Slug | None = None
    """The new template's id, a slug (`[a-z0-9][a-z0-9_-]{0,63}`); 409 if it is taken."""


class TemplatePatch(RequestModel):
    """Body of `PATCH /api/workflows/{id}`: the fields given replace the stored ones. A change to `nodes` or
    `start_node` without a higher `version` bumps the minor version; earlier versions stay readable at
    `GET /api/workflows/{id}/versions`. Running instances keep their frozen copy."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "County outreach (autumn drive)"}]})

    name: TemplateName | None = None
    """The new display name, 1 to 200 characters; `null` leaves it as it is."""
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    """The new description (at most 10,000 characters); `null` clears it."""
    version: SemVer | None = None
    """A new semantic version, not lower than the current one (422 otherwise); `null` leaves it to the server."""
    start_node: str | None = None
    """The id of the new start node; `null` clears it (the template becomes a draft that cannot run)."""
    nodes: Annotated[dict[str, Node], Field(max_length=2000)] | None = None
    """The whole new graph, replacing every node (at most 2,000); `null` leaves it as it is."""
    triggers: list[Trigger] | None = None
    """The whole new list of triggers; `null` leaves it as it is (`[]` removes them all)."""
    goals: list[Goal] | None = None
    """The whole new list of goals; `null` leaves it as it is (`[]` removes them all)."""
    contact_hours: ContactHours | None = None
    """The template's own contact hours (the whole object); `null` removes them (the tenant's apply)."""
    tags: Tags | None = None
    """The whole new list of tags (slugs, at most 100); `null` leaves it as it is."""
    metadata: BoundedObject | None = None
    """The whole new metadata object (at most 64 KiB as JSON); `null` leaves it as it is."""


class CloneRequest(RequestModel):
    """Body of `POST /api/workflows/{id}/clone`: a copy of the template under a new id, at version `1.0.0`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "county-outreach-v2", "name": "County outreach, second round"}]}
    )

    id: Slug | None = None
    """The copy's id, a slug; 12 hex characters are generated when absent; 409 if it is taken."""
    name: TemplateName | None = None
    """The copy's display name; absent: the original's name followed by ` (copy)`."""


class WorkflowTemplate(ResponseModel):
    """A stored template (its current version)."""

    id: str
    """The template's id, a slug."""
    tenant: str
    """The tenant the template belongs to."""
    name: str
    """The template's display name."""
    description: str | None = None
    """What the workflow is for, or null."""
    version: str = "1.0.0"
    """The current semantic version; new instances freeze a copy of this version."""
    start_node: str | None = None
    """The id of the node an instance enters when it starts; null in a draft without one."""
    nodes: dict[str, Node]
    """The graph: node id to node."""
    triggers: list[Trigger] = Field(default_factory=list)
    """Rules that enrol contacts in this template by themselves."""
    goals: list[Goal] = Field(default_factory=list)
    """Exits that complete the contact's unfinished instances of this template when their event happens."""
    contact_hours: ContactHours | None = None
    """The template's own contact hours, or null (the tenant's apply). They are read when a step runs, so a change
    applies to running instances too."""
    trigger_errors: list[TriggerError] = Field(default_factory=list)
    """The latest triggers and goals that could not run (newest first, at most 10): a `where` that failed, a
    template that cannot enrol. Kept beside the template: recording one does not change its version."""
    tags: list[str] = Field(default_factory=list)
    """The template's tags (slugs)."""
    metadata: JSONObject = Field(default_factory=dict)
    """The author's own data."""
    created_at: Timestamp
    """When the template was created (UTC, ISO 8601)."""
    updated_at: Timestamp
    """When the template last changed (UTC, ISO 8601)."""


class TemplateVersion(ResponseModel):
    """One kept version of a template, as it was when it was replaced (or is now, for the newest)."""

    template_id: str
    """The id of the template."""
    version: str
    """The semantic version this entry keeps."""
    template: WorkflowTemplate
    """The whole template as it was at this version."""
    created_at: Timestamp
    """When this version was saved (UTC, ISO 8601)."""


class ValidationItem(BaseModel):
    """One problem found in a template."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    code: str
    """A stable code for the kind of problem, e.g. `start_node_unknown`, `dead_end`, `unreachable`."""
    node: str | None = None
    """The id of the node the problem is at; null for a problem of the whole template."""
    message: str
    """What is wrong, in words a campaign organiser understands."""


class ValidationReport(BaseModel):
    """The answer of `GET /api/workflows/{id}/validate`."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    valid: bool
    """True when there are no errors: instances can be created from the template."""
    errors: list[ValidationItem] = Field(default_factory=list)
    """Problems that stop the template from running (a draft may be saved with them)."""
    warnings: list[ValidationItem] = Field(default_factory=list)
    """Things that are probably mistakes but do not stop the template from running."""


def version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


def bump_minor(version: str) -> str:
    major, minor, _ = version_tuple(version)
    return f"{major}.{minor + 1}.0"
