"""A dry run of a template (`POST /api/workflows/{id}/simulate`): what it is asked, and the paths it finds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from .common import BoundedObject, RequestModel, ResponseModel, Timestamp

Outcome = Annotated[str, Field(min_length=1, max_length=64)]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


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

    @field_validator("start_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is UTC; the years a campaign can run in, with room for its waits."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not EARLIEST <= value <= LATEST:
            raise ValueError("must be between 1970 and 9000")
        return value


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
