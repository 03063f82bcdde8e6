"""Campaign numbers: how many voters sit at each step of a template, where they went, and how long they stayed."""

from __future__ import annotations

from pydantic import Field

from .common import ResponseModel, Timestamp


class NodeStats(ResponseModel):
    """The numbers of one node."""

    current: int
    """Unfinished instances at the node now (finished ones are counted in `end_statuses`)."""
    entered: int
    """Times instances entered the node (an instance that loops back is counted each time)."""
    outcomes: dict[str, int] = Field(default_factory=dict)
    """How many times instances left the node by each outcome (a split's branches are these; an outcome recorded
    and then tried again later is counted in `retries`, not here)."""
    median_seconds: float | None = None
    """The median time an instance stayed at the node before leaving it, in seconds, within about 10%; null when
    nothing has left it yet."""
    retries: dict[str, int] = Field(default_factory=dict)
    """For an action with come-back-later tries (`retry`): how many instances began each round (`"1"`, `"2"`, …)
    of trying again; empty otherwise."""


class WorkflowStats(ResponseModel):
    """`GET /api/workflows/{id}/stats`: the template's campaign numbers, over every version its instances run."""

    template_id: str
    """The template counted."""
    nodes: dict[str, NodeStats]
    """Per node id: every node of the template's current version, and any node of an older version that still
    has instances or history."""
    statuses: dict[str, int]
    """Instances per status now (every status is listed)."""
    end_statuses: dict[str, int]
    """Instances that completed, per end status (every end status of the current version is listed)."""
    since: Timestamp | None = None
    """Start of the window counted (rounded down to the hour), when `since` was given."""
    until: Timestamp | None = None
    """End of the window counted (rounded up to the hour), when `until` was given."""
