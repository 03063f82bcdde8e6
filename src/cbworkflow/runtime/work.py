"""What the worker hands its handlers, and what an executor or a webhook call hands back (workflows.md § Actions).

The worker renders everything a piece of work needs (placeholders filled, the node's settings read) into one of
these, so a handler does I/O only: it never digs into the instance or the template. They are plain frozen
dataclasses with no imports of ours, so executors, the worker and the tests' fake handlers share them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class NodeWork:
    """What any work at a node may come to."""

    outcomes: list[str]  # the node's transition keys


@dataclass(frozen=True, kw_only=True)
class DecisionRequest(NodeWork):
    """An AI decision node's question, its prompt rendered, for the model to pick one of the outcomes."""

    prompt: str
    model: str | None = None  # the rule's model; None: the configured one


@dataclass(frozen=True, kw_only=True)
class CallOut(NodeWork):
    """Work that reaches outside (a webhook, a text, an email) and may be retried, or repeated by another worker."""

    idempotency_key: str  # the same on every attempt at this node visit, so the receiver can drop repeats


@dataclass(frozen=True, kw_only=True)
class WebhookCall(CallOut):
    """A webhook node's call: the URL, headers and body with their placeholders filled, and the node's settings."""

    url: str
    method: str
    headers: dict[str, str]
    body: Any  # JSON; None: no body
    timeout_s: float
    max_attempts: int


@dataclass(frozen=True, kw_only=True)
class ActionRequest(CallOut):
    """An action node's run by its executor: the action_config with its placeholders filled, and the contact."""

    action: str  # the node's `action`, e.g. "sms"
    config: dict[str, Any]
    contact: dict[str, Any]  # as JSON
    instance_id: str
    node_id: str


@dataclass(frozen=True)
class ActionResult:
    """What an executor or a webhook call came to. `data` goes into the timeline, so it never holds credentials,
    headers or full URLs with their query strings."""

    outcome: str | None  # a key of the node's transitions, or None: the instance fails
    ok: bool  # the action was performed (a 2xx, a message accepted)
    data: dict[str, Any] = field(default_factory=dict)  # for the timeline; never secrets
    error: str | None = None

    def details(self) -> dict[str, Any]:
        """Everything for the timeline event in one object (what the worker records)."""
        shown: dict[str, Any] = {**self.data, "ok": self.ok}
        if self.error is not None:
            shown["error"] = self.error
        return shown
