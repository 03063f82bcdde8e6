"""Webhooks: the `webhook` executor (action nodes) and `call_webhook_node` (webhook nodes).

Both are one outbound call through `outbound.http.send_with_retries` (SSRF guard, pinned address, bounded
response, retries with backoff on connection errors, timeouts, 429 and 5xx) and differ only in their outcome names:
an action answers `sent` / `failed`, a webhook node `success` / `failure`. In both, a 2xx answer that is a JSON
object with an `outcome` naming one of the node's transitions picks that outcome instead (workflows.md).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from cbworkflow.executors.base import ConfigError, failed, http_data, last_error, shown_url, succeeded
from cbworkflow.outbound.guard import Resolver
from cbworkflow.outbound.http import send_with_retries
from cbworkflow.runtime.work import ActionRequest, ActionResult, WebhookCall

Sleep = Callable[[float], Awaitable[None]]
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 5
MAX_ATTEMPTS_CAP = 10  # a template cannot make the worker hammer a host (or hold its lease) for long
MAX_TIMEOUT_S = 60.0
# All attempts and the waits between them end within this, so a call finishes well inside the worker's lease on
# the instance (5 minutes): no attempt starts that could not finish in time.
TOTAL_BUDGET_S = 240.0
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def number(value: Any, name: str, default: float, low: float, high: float) -> float:
    """A numeric setting of a node: absent → `default`; above `high` → `high` (a cap, not an error); not a number
    or below `low` → ConfigError."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number")
    if value < low:
        raise ConfigError(f"{name} must be at least {low:g}")
    return float(min(value, high))


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError("headers must be an object of strings")
    return dict(value)


def _json_bytes(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"body is not JSON: {exc}") from None


def _response_outcome(body: Any, outcomes: Sequence[str]) -> str | None:
    if isinstance(body, dict):
        chosen = body.get("outcome")
        if isinstance(chosen, str) and chosen in outcomes:
            return chosen
    return None


async def _call(
    *,
    url: Any,
    method: Any,
    headers: Any,
    body: Any,
    timeout_s: Any,
    max_attempts: Any,
    idempotency_key: str,
    outcomes: Sequence[str],
    allow_private: bool,
    success: str,
    failure: str,
    sleep: Sleep,
    resolver: Resolver | None,
) -> ActionResult:
    try:
        if not isinstance(url, str) or not url:
            raise ConfigError("url is required")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(sorted(METHODS))}")
        request_headers = _headers(headers)
        timeout = number(timeout_s, "timeout_s", DEFAULT_TIMEOUT_S, 0.1, MAX_TIMEOUT_S)
        attempts_allowed = int(number(max_attempts, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS_CAP))
        content = None if body is None else _json_bytes(body)
    except (ConfigError, TypeError, ValueError) as exc:
        return failed(f"webhook configuration: {exc}", outcomes, outcome=failure)
    if content is not None and not any(k.lower() == "content-type" for k in request_headers):
        request_headers["Content-Type"] = "application/json"
    response, attempts = await send_with_retries(
        method,
        url,
        headers=request_headers,
        content=content,
        timeout_s=timeout,
        max_attempts=attempts_allowed,
        allow_private=allow_private,
        idempotency_key=idempotency_key,
        max_total_s=TOTAL_BUDGET_S,
        sleep=sleep,
        resolver=resolver,
    )
    data = {"url": shown_url(url), "method": method.upper(), **http_data(response, attempts)}
    if response is not None and response.is_success:
        chosen = _response_outcome(response.json, outcomes)
        if chosen is not None:
            data["response_outcome"] = chosen
            return ActionResult(outcome=chosen, ok=True, data=data)
        return succeeded(success, outcomes, data)
    return failed(last_error(response, attempts), outcomes, data, outcome=failure)


async def call_webhook_node(
    call: WebhookCall, *, allow_private: bool, sleep: Sleep = asyncio.sleep, resolver: Resolver | None = None
) -> ActionResult:
    """A webhook node's call (url, headers and body already rendered). Outcome: `success` on 2xx (or the response's
    `outcome` when it is one of the node's), `failure` otherwise, None when the node lacks the outcome to take."""
    return await _call(
        url=call.url,
        method=call.method or "POST",
        headers=call.headers,
        body=call.body,
        timeout_s=call.timeout_s,
        max_attempts=call.max_attempts,
        idempotency_key=call.idempotency_key,
        outcomes=call.outcomes,
        allow_private=allow_private,
        success="success",
        failure="failure",
        sleep=sleep,
        resolver=resolver,
    )


class WebhookExecutor:
    """`action_config`: `url` (required), `method` (POST), `headers`, `body` (JSON; absent or null: no body),
    `timeout_s` (10), `max_attempts` (5). Outcome `sent` / `failed`."""

    kind = "webhook"

    def __init__(self, *, allow_private: bool, sleep: Sleep = asyncio.sleep, resolver: Resolver | None = None) -> None:
        self.allow_private = allow_private
        self.sleep = sleep
        self.resolver = resolver

    async def run(self, request: ActionRequest) -> ActionResult:
        config = request.config
        return await _call(
            url=config.get("url"),
            method=config.get("method") or "POST",
            headers=config.get("headers"),
            body=config.get("body"),
            timeout_s=config.get("timeout_s"),
            max_attempts=config.get("max_attempts"),
            idempotency_key=request.idempotency_key,
            outcomes=request.outcomes,
            allow_private=self.allow_private,
            success="sent",
            failure="failed",
            sleep=self.sleep,
            resolver=self.resolver,
        )
