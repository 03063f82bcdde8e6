"""What an executor is, and the helpers executors share (workflows.md § Actions). The request and result types
are `runtime.work`'s: the worker, the executors and the tests' fakes speak the same ones.

An executor performs one action for one contact and answers with an outcome of the node. The mapping of failures
is the contract's: a transient failure is retried inside the executor (with backoff, bounded); once attempts are
exhausted, or on a permanent failure, the outcome is `failed` when the node has a `failed` transition, and None
otherwise, which the engine turns into an instance in status `failed` (with `error` in the `action_failed` event).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from cbworkflow.outbound.http import Attempt, OutboundResponse
from cbworkflow.runtime.work import ActionRequest, ActionResult


class Executor(Protocol):
    async def run(self, request: ActionRequest) -> ActionResult: ...


class ConfigError(ValueError):
    """The node's action_config (or the contact) cannot be used: a permanent failure, never retried."""


def pick(outcome: str, outcomes: Sequence[str]) -> str | None:
    """`outcome` when the node has it, else None (the engine then fails the instance)."""
    return outcome if outcome in outcomes else None


def succeeded(outcome: str, outcomes: Sequence[str], data: dict[str, Any]) -> ActionResult:
    chosen = pick(outcome, outcomes)
    error = None if chosen else f"the action succeeded but the node has no {outcome!r} transition"
    return ActionResult(outcome=chosen, ok=True, data=data, error=error)


def failed(
    error: str, outcomes: Sequence[str], data: dict[str, Any] | None = None, *, outcome: str = "failed"
) -> ActionResult:
    return ActionResult(outcome=pick(outcome, outcomes), ok=False, data=data or {}, error=error)


def shown_url(url: str) -> str:
    """A URL for the timeline: scheme, host and port. No credentials, query or fragment, and no path either:
    hooks such as Slack's carry their secret in the path, and the timeline is read by volunteers too."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}" + ("/…" if parts.path not in ("", "/") else "/")


def http_data(response: OutboundResponse | None, attempts: list[Attempt]) -> dict[str, Any]:
    data: dict[str, Any] = {"attempts": [a.as_dict() for a in attempts]}
    if response is not None:
        data["status_code"] = response.status_code
        if response.truncated:
            data["response_truncated"] = True
        if response.redirects:
            data["redirects"] = response.redirects
    return data


def last_error(response: OutboundResponse | None, attempts: list[Attempt]) -> str:
    """One sentence for a failed call: the last status or error, and how many attempts were made."""
    tries = f"after {len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    if response is not None:
        if 300 <= response.status_code < 400:
            where = response.headers.get("location", "")
            return f"HTTP {response.status_code} redirect not followed ({shown_url(where) or 'no location'}) {tries}"
        return f"HTTP {response.status_code} {tries}"
    error = attempts[-1].error if attempts else "no attempt made"
    return f"{error} ({tries})"
