"""`/api/subscriptions`: outbound webhooks, their delivery log and redelivery (api.md § Events and subscriptions,
§ Campaign work). Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from ...models.access import Principal
from ...models.common import Page
from ...models.subscriptions import (
    Delivery,
    DeliveryStatus,
    Subscription,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPatch,
)
from ..deps import ADMINS, PagingDep, ServicesDep, allow, record_id
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/subscriptions", tags=["subscriptions"], responses=api_errors())

Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="manage webhook subscriptions"))]
SubscriptionIdPath = Annotated[str, Path(description="the subscription's id (as `id` in its record)")]
DeliveryIdPath = Annotated[str, Path(description="the delivery's id (as `id` in the delivery log)")]


@router.get("", response_model=Page[Subscription], summary="List webhook subscriptions, newest first")
async def list_subscriptions(services: ServicesDep, principal: Admin, page: PagingDep) -> Page[Subscription]:
    """The tenant's subscriptions, without their secrets."""
    found = await services.subscriptions.list(principal.tenant, page)
    return Page[Subscription](items=found.items, next_cursor=found.next_cursor)


@router.post("", response_model=SubscriptionCreated, status_code=201, summary="Subscribe a URL to events")
async def create_subscription(services: ServicesDep, principal: Admin, body: SubscriptionCreate) -> SubscriptionCreated:
    """Events of the types named (or `["*"]`) committed from now on are POSTed to `url`, signed as the Standard
    Webhooks specification says with `secret` (generated when not given, and shown in this answer only)."""
    return await services.subscriptions.create(principal, body)


@router.get("/{subscription_id}", response_model=Subscription, responses=error_responses(404))
async def get_subscription(
    services: ServicesDep, principal: Admin, subscription_id: SubscriptionIdPath
) -> Subscription:
    """One subscription: whether it is enabled, why not, and its failures in a row."""
    return await services.subscriptions.get(principal.tenant, record_id(subscription_id, "subscription"))


@router.patch("/{subscription_id}", response_model=Subscription, responses=error_responses(404))
async def update_subscription(
    services: ServicesDep, principal: Admin, subscription_id: SubscriptionIdPath, body: SubscriptionPatch
) -> Subscription:
    """Change its `url` or `events`, disable it (`enabled: false`) or re-enable it (`enabled: true`, which clears
    its failure count; its pending deliveries go out again)."""
    return await services.subscriptions.update(principal, record_id(subscription_id, "subscription"), body)


@router.delete("/{subscription_id}", status_code=204, responses=error_responses(404))
async def delete_subscription(services: ServicesDep, principal: Admin, subscription_id: SubscriptionIdPath) -> Response:
    """Delete it and its delivery log; nothing more is sent to it."""
    await services.subscriptions.delete(principal, record_id(subscription_id, "subscription"))
    return Response(status_code=204)


@router.get("/{subscription_id}/deliveries", response_model=Page[Delivery], responses=error_responses(404))
async def list_deliveries(
    services: ServicesDep,
    principal: Admin,
    subscription_id: SubscriptionIdPath,
    page: PagingDep,
    status: Annotated[DeliveryStatus | None, Query(description="only deliveries of this status")] = None,
) -> Page[Delivery]:
    """The delivery log, newest first: each message with its attempts (status code, latency, error)."""
    found = await services.subscriptions.deliveries(
        principal.tenant, record_id(subscription_id, "subscription"), status, page
    )
    return Page[Delivery](items=found.items, next_cursor=found.next_cursor)


@router.post(
    "/{subscription_id}/deliveries/{delivery_id}/redeliver",
    response_model=Delivery,
    status_code=202,
    responses=error_responses(404, 409),
)
async def redeliver(
    services: ServicesDep, principal: Admin, subscription_id: SubscriptionIdPath, delivery_id: DeliveryIdPath
) -> Delivery:
    """Send that message again, with the same `webhook-id` and body, as soon as the sender can (its retry schedule
    starts again). 409 while the subscription is disabled."""
    return await services.subscriptions.redeliver(
        principal, record_id(subscription_id, "subscription"), record_id(delivery_id, "delivery")
    )
