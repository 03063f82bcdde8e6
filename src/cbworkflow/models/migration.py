"""Moving running instances to a template's current version (`POST /api/workflows/{id}/migrate`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from .common import RequestModel, ResponseModel
from .templates import SemVer

NodeId = Annotated[str, Field(min_length=1, max_length=64)]
NOT_STARTED = "(not started)"  # how the counts name pending instances, which are at no node yet


class MigrateRequest(RequestModel):
    """Body of `POST /api/workflows/{id}/migrate` (admin)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"from_version": "1.0.0", "node_map": {"schedule_door": "door_knock"}, "dry_run": True}]
        }
    )

    from_version: SemVer
    """The version whose unfinished instances move (as `template_version` shows on them)."""
    node_map: Annotated[dict[NodeId, NodeId], Field(max_length=2000)] = Field(default_factory=dict)
    """Old node id to the node of the current version it becomes. A node not in the map keeps its id when the
    current version still has it; otherwise its instances stay where they are, counted as `unmapped`."""
    dry_run: bool = True
    """True (the default): count what would move, change nothing. False: move them."""


class MigrationResult(ResponseModel):
    """What a migration moved (or, in a dry run, would move)."""

    moved: dict[str, dict[str, int]]
    """Old node to new node to how many instances (`(not started)` for pending ones)."""
    unmapped: dict[str, int]
    """Nodes gone from the current version and not in `node_map`, with how many instances stay there."""
    dry_run: bool
    """Whether this was only counted."""
    to_version: str
    """The version they moved (or would move) to: the template's current one."""
