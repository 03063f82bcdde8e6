"""Webhook subscriptions and their deliveries (api.md § Events and subscriptions, § Campaign work).

A subscription is a URL that receives the tenant's events of the types it names, signed as the Standard Webhooks
specification says. A delivery is one message (one event) to one subscription: the exact JSON text that is
signed and sent, the same on every attempt, with the attempts made so far.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..ids import new_id
from .common import RequestModel, ResponseModel, Timestamp
from .events import SYSTEM_ACTOR, Event, EventType

ALL_EVENTS = "*"
MAX_URL_LENGTH = 2048

Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class DeliveryStatus(StrEnum):
    """`pending` (not sent yet, or failed and waiting for its next attempt), `succeeded` (the receiver answered
    2xx), `failed` (every attempt failed, or the receiver answered 410 Gone)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SubscriptionRecord(BaseModel):
    """A subscription as stored: with its secret (signing needs it) and the outbox sequence it starts after."""

    tenant: str
    id: str
    url: str
    events: list[str]
    secret: str
    enabled: bool = True
    disabled_reason: str | None = None
    failure_count: int = 0  # attempts failed in a row, over all its deliveries; 0 after a success
    failing_since: datetime | None = None  # the first failed attempt since the last success
    after_sequence: int = 0  # events up to this sequence were committed before it: never sent to it
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events

    def public(self) -> Subscription:
        return Subscription.model_validate(self.model_dump(exclude={"tenant", "secret", "after_sequence"}))

    def disable(self, reason: str, now: datetime, actor: str = SYSTEM_ACTOR) -> Event:
        """Disable it (in place), and the tenant-level `delivery_disabled` event that says so."""
        self.enabled, self.disabled_reason, self.updated_at = False, reason, now
        return Event(
            id=new_id(),
            type=EventType.DELIVERY_DISABLED,
            timestamp=now,
            actor=actor,
            data={"subscription_id": self.id, "reason": reason},
            message=f"Webhook subscription {self.id} disabled: {reason}",
        )

    def enable(self, now: datetime) -> None:
        """Enable it again (in place), with a clean slate: no reason, no failures counted."""
        self.enabled, self.disabled_reason, self.updated_at = True, None, now
        self.failure_count, self.failing_since = 0, None


class Subscription(ResponseModel):
    """An outbound webhook, as the API shows it (never with its secret, which only the creating answer holds)."""

    id: str
    """The subscription's id (12 hex characters)."""
    url: str
    """Where deliveries are POSTed."""
    events: list[str]
    """The event types sent to it, or `["*"]` for every type."""
    enabled: bool
    """Whether deliveries are made. A disabled subscription gets no new deliveries, and its pending ones wait."""
    disabled_reason: str | None = None
    """Why it was disabled (a `410 Gone` answer, every delivery failing for 5 days, or an admin); null when enabled."""
    failure_count: int
    """Attempts that failed in a row, over all its deliveries; 0 after a success, and when re-enabled."""
    failing_since: Timestamp | None = None
    """When the current run of failures began; null when the last attempt succeeded."""
    created_at: Timestamp
    """When it was made (UTC, ISO 8601)."""
    updated_at: Timestamp
    """When it last changed: by an admin, or by the sender (failures counted, disabled)."""


class SubscriptionCreated(Subscription):
    """The answer of `POST /api/subscriptions`: the subscription and, this once, its secret."""

    secret: str
    """The signing secret (`whsec_` + base64), shown in this answer only: keep it where the receiver can read it."""


class SubscriptionCreate(RequestModel):
    """Body of `POST /api/subscriptions`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://crm.example.org/hooks/cbw", "events": ["node_entered", "instance_completed"]}]
        }
    )

    url: Url
    """An http or https URL that the outbound guard lets the worker call (a public address, unless the server
    allows private ones)."""
    events: Annotated[list[EventName], Field(min_length=1, max_length=100)]
    """Event types (`node_entered`, `instance_completed`, …), or `["*"]` for every type."""
    secret: Secret | None = None
    """A signing secret of your own: `whsec_` followed by the base64 of 24 to 64 random bytes. Generated when not
    given."""


class SubscriptionPatch(RequestModel):
    """Body of `PATCH /api/subscriptions/{id}`: the fields given change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"events": ["*"], "enabled": True}]})

    url: Url | None = None
    """A new URL, checked as on creation."""
    events: Annotated[list[EventName], Field(min_length=1, max_length=100)] | None = None
    """New event types, or `["*"]`; events committed from now on are matched against them."""
    enabled: bool | None = None
    """`false` disables it (reason: disabled by an admin); `true` re-enables it and clears its failure count."""


class DeliveryAttempt(BaseModel):
    """One try of a delivery."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    at: Timestamp
    """When it was sent."""
    status_code: int | None = None
    """The receiver's HTTP status; null when no answer came (a timeout, a refused connection, a refused address)."""
    latency_ms: float
    """How long the exchange took, in milliseconds."""
    error: str | None = None
    """What went wrong, in words; null on success."""


class DeliveryRecord(BaseModel):
    """A delivery as stored, with the sender's lease on it."""

    tenant: str
    id: str
    subscription_id: str
    webhook_id: str  # the `webhook-id` header: the same on every attempt and on a redelivery
    event_sequence: int
    event_type: str
    order_key: str  # the instance id, `contact:<id>`, or `tenant`: deliveries of one key go out in order
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    held_by: str | None = None  # the sender sending it now, until `lease_until`
    lease_until: datetime | None = None
    body: str  # the exact JSON text signed and sent
    created_at: datetime
    redelivered_at: datetime | None = None  # the last redelivery asked for: the retry schedule starts again there

    def attempts_in_round(self) -> int:
        """Attempts since the delivery was made, or since it was last redelivered."""
        since = self.redelivered_at
        return len(self.attempts) if since is None else sum(1 for a in self.attempts if a.at >= since)

    def public(self) -> Delivery:
        return Delivery.model_validate(self.model_dump(include=set(Delivery.model_fields)))


class Delivery(ResponseModel):
    """One message to one subscription (api.md § Campaign work)."""

    id: str
    """The delivery's id (12 hex characters)."""
    webhook_id: str
    """The `webhook-id` header sent with it: the same on every attempt and redelivery, so a receiver can drop
    duplicates."""
    event_type: str
    """The type of the event it carries."""
    event_sequence: int
    """The event's `sequence` in the tenant's outbox."""
    status: DeliveryStatus
    """`pending`, `succeeded` or `failed`."""
    attempts: list[DeliveryAttempt]
    """Every attempt so far, oldest first."""
    next_attempt_at: Timestamp | None = None
    """When it will be tried next (pending only)."""
    created_at: Timestamp
    """When the event was taken up for this subscription."""
    redelivered_at: Timestamp | None = None
    """When a redelivery was last asked for (the retry schedule starts again then); null if never."""
