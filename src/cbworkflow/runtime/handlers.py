"""The worker's slow work, wired to the real world: the model (Anthropic's SDK), webhooks and executors.

Kept apart from the worker so tests can hand it fakes, and so `import cbworkflow` never imports the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models.instances import WorkflowInstance
from ..models.templates import ActionNode, AIRule, WebhookNode
from ..settings import Settings


def automatic_actions(settings: Settings) -> frozenset[str]:
    """The actions that have an executor in this deployment (`CBW_EXECUTORS`); the others are human tasks."""
    from ..executors import parse_executors

    return frozenset(parse_executors(settings.executors))


@dataclass
class Result:
    """An outcome (None when the work failed) and what the timeline should say about it."""

    outcome: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return self.data


class DefaultHandlers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._decider: Any = None
        self._executors: dict[str, Any] | None = None

    async def close(self) -> None:
        if self._decider is not None:
            await self._decider.close()

    async def decide(self, instance: WorkflowInstance, rule: AIRule, prompt: str) -> Result:
        from .ai import AIDecider

        if self._decider is None:
            self._decider = AIDecider.from_settings(self.settings)
        node = instance.nodes[instance.current_node or ""]
        decision = await self._decider.decide(prompt, sorted(node.transitions), model=rule.model)
        return Result(decision.outcome, decision.event_data())

    async def call_webhook(self, instance: WorkflowInstance, node: WebhookNode, data: dict[str, Any]) -> Result:
        from ..executors import call_webhook_node

        result = await call_webhook_node(
            url=data["url"],
            method=node.webhook_method,
            headers=data["headers"],
            body=data["body"],
            timeout_s=node.timeout_s,
            max_attempts=node.max_attempts,
            idempotency_key=data["idempotency_key"],
            outcomes=sorted(node.transitions),
            allow_private=self.settings.outbound_allow_private,
        )
        return Result(result.outcome, {**result.data, **({"error": result.error} if result.error else {})})

    async def run_action(self, instance: WorkflowInstance, node: ActionNode, data: dict[str, Any]) -> Result:
        from ..executors import ActionRequest, build_executors

        if self._executors is None:
            self._executors = build_executors(self.settings)
        executor = self._executors[node.action or ""]
        result = await executor.run(
            ActionRequest(
                action=node.action or "",
                config=data["config"] if isinstance(data["config"], dict) else {},
                contact=data["contact"],
                instance_id=instance.id,
                node_id=instance.current_node or "",
                idempotency_key=data["idempotency_key"],
                outcomes=sorted(node.transitions),
            )
        )
        return Result(result.outcome, {**result.data, **({"error": result.error} if result.error else {})})
