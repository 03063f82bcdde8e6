"""The worker's slow work, wired to the real world: the model (Anthropic's SDK), webhooks and executors.

Kept apart from the worker so tests can hand it fakes. Each handler gets a `runtime.work` request holding all it
needs and does the I/O only; the SDK and the executors (httpx, smtplib) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings import Settings
from .work import ActionRequest, ActionResult, DecisionRequest, WebhookCall

if TYPE_CHECKING:
    from ..executors import Executor
    from .ai import AIDecider, AIDecision


def automatic_actions(settings: Settings) -> frozenset[str]:
    """The actions that have an executor in this deployment (`CBW_EXECUTORS`); the others are human tasks."""
    from ..executors import parse_executors

    return frozenset(parse_executors(settings.executors))


class DefaultHandlers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._decider: AIDecider | None = None
        self._executors: dict[str, Executor] | None = None

    async def close(self) -> None:
        if self._decider is not None:
            await self._decider.close()

    async def decide(self, request: DecisionRequest) -> AIDecision:
        from .ai import AIDecider

        if self._decider is None:
            self._decider = AIDecider.from_settings(self.settings)
        return await self._decider.decide(request.prompt, request.outcomes, model=request.model)

    async def call_webhook(self, call: WebhookCall) -> ActionResult:
        from ..executors import call_webhook_node

        return await call_webhook_node(call, allow_private=self.settings.outbound_allow_private)

    async def run_action(self, request: ActionRequest) -> ActionResult:
        from ..executors import build_executors

        if self._executors is None:
            self._executors = build_executors(self.settings)
        return await self._executors[request.action].run(request)
