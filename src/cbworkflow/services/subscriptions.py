"""Webhook subscriptions as the API sees them: create (with a signing secret), list, read, change, delete, the
delivery log and redelivery. The fan-out and the sender are `runtime/deliveries.py`'s.

The secret is stored as given: signing every delivery needs it, so unlike a token it cannot be kept as a hash.
It is shown once, in the answer that made the subscription.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections.abc import Callable

from ..clock import Clock
from ..errors import Conflict, InvalidInput, NotFound
from ..ids import new_id
from ..models.access import Principal
from ..models.events import EventType
from ..models.subscriptions import (
    ALL_EVENTS,
    Delivery,
    DeliveryRecord,
    DeliveryStatus,
    Subscription,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPatch,
    SubscriptionRecord,
)
from ..outbound import OutboundBlocked, OutboundError, resolve_allowed
from ..outbound.guard import Resolver
from ..store.base import Page, PageRequest, Store, Tx
from ..urls import UrlError, check_url

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # generated secrets; given ones may have 24 to 64 (the Standard Webhooks recommendation)
FAN_OUT_CURSOR = "subscriptions"  # runtime/deliveries.py's outbox cursor, locked while a subscription is made
RESOLVE_TIMEOUT_S = 5.0  # how long a save waits for DNS to vet the URL's addresses
KNOWN_EVENTS = frozenset(t.value for t in EventType)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """A given secret: `whsec_` and the base64 of 24 to 64 bytes, or InvalidInput saying what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidInput(f"secret: must start with {SECRET_PREFIX!r} (then the base64 of 24 to 64 random bytes)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"secret: what follows {SECRET_PREFIX!r} is not base64") from None
    if not 24 <= len(key) <= 64:
        raise InvalidInput(f"secret: the key is {len(key)} bytes; it must be 24 to 64")
    return secret


def check_events(events: list[str]) -> list[str]:
    """Known event types (duplicates dropped), or `["*"]` alone."""
    wanted = list(dict.fromkeys(events))
    if ALL_EVENTS in wanted:
        if len(wanted) > 1:
            raise InvalidInput('events: "*" means every type and stands alone')
        return wanted
    unknown = [name for name in wanted if name not in KNOWN_EVENTS]
    if unknown:
        raise InvalidInput(f"events: unknown event type {unknown[0]!r} (see the event types in the API docs, or '*')")
    return wanted


class SubscriptionService:
    def __init__(self, store: Store, clock: Clock, *, allow_private: bool, resolver: Resolver | None = None) -> None:
        self.store = store
        self.clock = clock
        self.allow_private = allow_private
        self.resolver = resolver
        self.notify: Callable[[], None] = lambda: None  # wakes this process's sender after a redelivery

    async def check_url(self, url: str) -> str:
        """An http(s) URL the outbound guard lets the worker call (any address when private ones are allowed).

        A name that does not resolve now is accepted: DNS may be down for a moment, and the guard runs again on
        every attempt, so an address it refuses is never called; the delivery log then says why."""
        try:
            checked = check_url(url)
        except UrlError as exc:
            raise InvalidInput(f"url: {exc.reason}") from None
        if not self.allow_private:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    await resolve_allowed(checked.host, checked.port, False, resolver=self.resolver)
            except OutboundBlocked as exc:
                raise InvalidInput(f"url: the worker may not call it ({exc.reason})") from None
            except (OutboundError, TimeoutError):
                pass
        return url

    async def create(self, principal: Principal, body: SubscriptionCreate) -> SubscriptionCreated:
        url = await self.check_url(body.url)
        events = check_events(body.events)
        secret = check_secret(body.secret) if body.secret is not None else new_secret()
        now = self.clock.now()

        def run(tx: Tx) -> SubscriptionRecord:
            tx.outbox_cursor(FAN_OUT_CURSOR)  # waits for a fan-out in progress: none runs between the next two
            record = SubscriptionRecord(
                tenant=tx.tenant,
                id=new_id(),
                url=url,
                events=events,
                secret=secret,
                after_sequence=tx.last_sequence(),
                created_at=now,
                updated_at=now,
            )
            tx.insert_subscription(record)
            return record

        made = await self.store.write(principal.tenant, run)
        return SubscriptionCreated.model_validate({**made.public().model_dump(), "secret": made.secret})

    async def list(self, tenant: str, page: PageRequest) -> Page[Subscription]:
        found = await self.store.read(tenant, lambda tx: tx.list_subscriptions(page))
        return Page([record.public() for record in found.items], found.next_cursor)

    async def get(self, tenant: str, subscription_id: str) -> Subscription:
        return (await self._record(tenant, subscription_id)).public()

    async def _record(self, tenant: str, subscription_id: str) -> SubscriptionRecord:
        found = await self.store.read(tenant, lambda tx: tx.get_subscription(subscription_id))
        if found is None:
            raise NotFound(f"no subscription with id {subscription_id!r}")
        return found

    async def update(self, principal: Principal, subscription_id: str, patch: SubscriptionPatch) -> Subscription:
        url = None if patch.url is None else await self.check_url(patch.url)
        events = None if patch.events is None else check_events(patch.events)
        now = self.clock.now()

        def run(tx: Tx) -> SubscriptionRecord:
            record = tx.get_subscription(subscription_id)
            if record is None:
                raise NotFound(f"no subscription with id {subscription_id!r}")
            if patch.enabled is True and not record.enabled:
                # What was committed while it was disabled is not sent to it (as for a new subscription).
                tx.outbox_cursor(FAN_OUT_CURSOR)
                record.after_sequence = max(record.after_sequence, tx.last_sequence())
            if url is not None:
                record.url = url
            if events is not None:
                record.events = events
            record.updated_at = now
            if patch.enabled is True and not record.enabled:
                record.enable(now)
            elif patch.enabled is False and record.enabled:
                tx.append_events([record.disable("disabled by an admin", now, actor=principal.token_id)])
            tx.update_subscription(record)
            return record

        changed = await self.store.write(principal.tenant, run)
        if changed.enabled:
            self.notify()  # its pending deliveries may go again
        return changed.public()

    async def delete(self, principal: Principal, subscription_id: str) -> None:
        if not await self.store.write(principal.tenant, lambda tx: tx.delete_subscription(subscription_id)):
            raise NotFound(f"no subscription with id {subscription_id!r}")

    async def deliveries(
        self, tenant: str, subscription_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> Page[Delivery]:
        def run(tx: Tx) -> Page[DeliveryRecord] | None:
            if tx.get_subscription(subscription_id) is None:
                return None
            return tx.list_deliveries(subscription_id, status, page)

        found = await self.store.read(tenant, run)
        if found is None:
            raise NotFound(f"no subscription with id {subscription_id!r}")
        return Page([record.public() for record in found.items], found.next_cursor)

    async def redeliver(self, principal: Principal, subscription_id: str, delivery_id: str) -> Delivery:
        """The same message (same `webhook-id`, same body) again, as soon as the sender can; the retry schedule
        starts again from the first attempt."""
        now = self.clock.now()

        def run(tx: Tx) -> DeliveryRecord:
            record = tx.get_subscription(subscription_id)
            delivery = None if record is None else tx.get_delivery(subscription_id, delivery_id)
            if record is None:
                raise NotFound(f"no subscription with id {subscription_id!r}")
            if delivery is None:
                raise NotFound(f"subscription {subscription_id!r} has no delivery with id {delivery_id!r}")
            if not record.enabled:
                raise Conflict("the subscription is disabled: re-enable it (PATCH enabled: true) to redeliver")
            delivery.status, delivery.next_attempt_at, delivery.redelivered_at = DeliveryStatus.PENDING, now, now
            delivery.held_by, delivery.lease_until = None, None  # one being sent now is sent again
            tx.update_delivery(delivery)
            return delivery

        done = await self.store.write(principal.tenant, run)
        self.notify()
        return done.public()
