"""Calls out of the service (webhooks, executors): the SSRF guard and a bounded, pinned HTTP client."""

from cbworkflow.outbound.guard import OutboundBlocked, OutboundError, is_forbidden, resolve_allowed
from cbworkflow.outbound.http import (
    Attempt,
    OutboundConnectionError,
    OutboundResponse,
    OutboundTimeout,
    send,
    send_with_retries,
)

__all__ = [
    "Attempt",
    "OutboundBlocked",
    "OutboundConnectionError",
    "OutboundError",
    "OutboundResponse",
    "OutboundTimeout",
    "is_forbidden",
    "resolve_allowed",
    "send",
    "send_with_retries",
]
