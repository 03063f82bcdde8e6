"""Workflow templates: definitions of outreach graphs (what a workflow is, not a run of it).

Node fields are typed loosely on purpose: a template with a missing `action` or a malformed `rule` is still a
valid *draft* that can be saved; `validation.validate_template` reports what is wrong with it. Only the shape
(node `type`, field names, JSON types) is enforced when a template is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp

SemVer = Annotated[str, StringConstraints(pattern=r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")]
TemplateName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
NodeType = Literal["action", "decision", "wait", "webhook", "end"]


class _NodeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    metadata: BoundedObject = Field(default_factory=dict)
    transitions: dict[str, str] = Field(default_factory=dict)


class ActionNode(_NodeBase):
    """A step someone (or an executor) performs: a call, a door knock, a text."""

    type: Literal["action"]
    action: str | None = None
    action_config: BoundedObject = Field(default_factory=dict)


class DecisionNode(_NodeBase):
    """A branch chosen by a rule: heuristic expression, AI model, or a person."""

    type: Literal["decision"]
    rule: BoundedObject | None = None


class WaitNode(_NodeBase):
    """A pause: for a duration, until a time, or until an event arrives."""

    type: Literal["wait"]
    wait_condition: BoundedObject | None = None


class WebhookNode(_NodeBase):
    """An outbound HTTP call whose answer picks the outcome."""

    type: Literal["webhook"]
    webhook_url: str | None = None
    webhook_method: str = "POST"
    webhook_headers: Annotated[dict[str, Annotated[str, StringConstraints(max_length=8192)]], Field(max_length=50)] = (
        Field(default_factory=dict)
    )
    webhook_body: Any = None
    timeout_s: float = 10
    max_attempts: int = 5


class EndNode(_NodeBase):
    """The end of a path: entering it completes the instance."""

    type: Literal["end"]
    end_status: str = "success"


Node = Annotated[ActionNode | DecisionNode | WaitNode | WebhookNode | EndNode, Field(discriminator="type")]


class HeuristicRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["heuristic"]
    expression: Annotated[str, StringConstraints(min_length=1)]


class AIRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ai"]
    prompt: Annotated[str, StringConstraints(min_length=1)]
    fallback: str | None = None
    confirm: bool = False
    model: str | None = None


class ManualRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["manual"]
    prompt: str | None = None


Rule = Annotated[HeuristicRule | AIRule | ManualRule, Field(discriminator="type")]


class Trigger(BaseModel):
    """Starts instances by itself; evaluated by the engine."""

    model_config = ConfigDict(extra="forbid")
    on: Literal["contact_created", "tag_added", "event"]
    tag: Slug | None = None
    event: str | None = None
    where: str | None = None
    reenter: bool = False


class TemplateFields(RequestModel):
    """What a template author writes (the JSON of `examples/county-outreach-v1.json`)."""

    name: TemplateName
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    version: SemVer = "1.0.0"
    start_node: Annotated[str, StringConstraints(max_length=64)] | None = None
    nodes: Annotated[dict[str, Node], Field(max_length=2000)]
    triggers: list[Trigger] = Field(default_factory=list)
    tags: Tags = Field(default_factory=list)
    metadata: BoundedObject = Field(default_factory=dict)


class TemplateCreate(TemplateFields):
    """Body of `POST /api/workflows`; `id` is generated (12 hex chars) when absent."""

    id: Slug | None = None


class TemplatePatch(RequestModel):
    """Body of `PATCH /api/workflows/{id}`: the fields given replace the stored ones."""

    name: TemplateName | None = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    version: SemVer | None = None
    start_node: str | None = None
    nodes: Annotated[dict[str, Node], Field(max_length=2000)] | None = None
    triggers: list[Trigger] | None = None
    tags: Tags | None = None
    metadata: BoundedObject | None = None


class CloneRequest(RequestModel):
    """Body of `POST /api/workflows/{id}/clone`."""

    id: Slug | None = None
    name: TemplateName | None = None


class WorkflowTemplate(ResponseModel):
    """A stored template (its current version)."""

    id: str
    tenant: str
    name: str
    description: str | None = None
    version: str = "1.0.0"
    start_node: str | None = None
    nodes: dict[str, Node]
    triggers: list[Trigger] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: JSONObject = Field(default_factory=dict)
    created_at: Timestamp
    updated_at: Timestamp


class TemplateVersion(ResponseModel):
    """One kept version of a template, as it was when it was replaced (or is now, for the newest)."""

    template_id: str
    version: str
    template: WorkflowTemplate
    created_at: Timestamp


class ValidationItem(BaseModel):
    """One problem found in a template."""

    code: str
    node: str | None = None
    message: str


class ValidationReport(BaseModel):
    """The answer of `GET /api/workflows/{id}/validate`."""

    valid: bool
    errors: list[ValidationItem] = Field(default_factory=list)
    warnings: list[ValidationItem] = Field(default_factory=list)


def version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


def bump_minor(version: str) -> str:
    major, minor, _ = version_tuple(version)
    return f"{major}.{minor + 1}.0"
