"""What a list may ask for: the filters of contacts, instances and the work queue, the same on every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ContactFilter:
    """Which contacts a list shows: every field given must match, and the contact must carry every tag."""

    tags: Sequence[str] = ()  # all of them
    county: str | None = None
    organization: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances a list shows: by contact, template, status, node or what they wait for, and tags."""

    contact_id: str | None = None
    template_id: str | None = None
    status: str | None = None
    current_node: str | None = None
    waiting_for: str | None = None
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks of the work queue: by the node's action, template, the contact's county or tag, holder."""

    action: str | None = None
    template_id: str | None = None
    county: str | None = None
    tag: str | None = None
    held_by: str | None = None  # only the tasks this token holds now


@dataclass(frozen=True)
class EventFilter:
    """Which events of the outbox a reader wants (the live stream's filters): every field given must match."""

    instance_id: str | None = None
    contact_id: str | None = None
    template_id: str | None = None
    types: Sequence[str] = ()  # any of them
    held_by: str | None = None  # only events of instances this token holds now (a volunteer's stream)
