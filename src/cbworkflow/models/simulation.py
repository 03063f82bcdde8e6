"""A dry run of a template (`POST /api/workflows/{id}/simulate`): what it is asked, and the paths it finds."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from .common import BoundedObject, RequestModel, ResponseModel, Timestamp

Outcome = Annotated[str, Field(min_length=1, max_length=64)]


class SimulateRequest(RequestModel):
    """Body of `POST /api/workflows/{id}/simulate`; every field is optional."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "contact": {"name": "Ada Lovelace", "phone": "+12135550100", "county": "Riverside"},
                    "state": {"notes": "interested in volunteering"},
                    "start_at": "2026-10-05T14:00:00+00:00",
                    "choose": {"initial_call": "no_answer"},
                    "max_paths": 50,
                }
            ]
        }
    )

    contact: BoundedObject = Field(default_factory=dict)
    """The contact the run pretends to reach, as a contact's fields (`name`, `phone`, `timezone`, `county`,
    `metadata`, `opted_out`...): placeholders, expressions, contact hours and opt-outs read it."""
    state: BoundedObject = Field(default_factory=dict)
    """The instance's initial state, as `initial_state` of an enrolment."""
    start_at: Timestamp | None = None
    """When the simulated run starts (ISO 8601); now when absent."""
    choose: Annotated[dict[str, Outcome], Field(max_length=2000)] = Field(default_factory=dict)
    """Node id to the outcome it always takes in this run (a person's choice, a model's, a webhook's answer, an
    awaited event `received` or `timeout`, a split's branch); other nodes where the world chooses take each of
    their outcomes in turn."""
    max_paths: Annotated[int, Field(ge=1, le=1000)] = 200
    """Stop after this many paths (1 to 1,000); the answer then says `truncated`."""


class SimulatedStepOut(ResponseModel):
    """A node left on a simulated path."""

    node: str
    """The node's id."""
    outcome: str
    """The outcome it was left by."""
    at: Timestamp
    """When, on the simulated clock (waits and contact hours applied)."""


class SimulatedPathOut(ResponseModel):
    """One way through the template."""

    steps: list[SimulatedStepOut]
    """The nodes left, in order."""
    end_status: str | None
    """The end node's `end_status`, or `failed` / `cancelled`; null for a path cut short (a loop)."""
    duration: str
    """From the start to the last step, as an ISO 8601 duration (`P3DT2H`)."""
    duration_seconds: float
    """The same in seconds."""


class SimulationResult(ResponseModel):
    """What `POST /api/workflows/{id}/simulate` found; nothing was stored, sent or asked of a model."""

    paths: list[SimulatedPathOut]
    """Every path found, depth first in the template's outcome order."""
    truncated: bool
    """True when there are more paths than `max_paths`, or a path was cut short."""
