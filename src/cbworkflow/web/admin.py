"""/admin, for a tenant's admins: people (invite, change a role, remove), API tokens (create, revoke), and webhook
subscriptions with their deliveries (create, enable or disable, redeliver).

A secret (an invitation link, a token, a subscription's signing secret) is shown once, on the page that answers
the form that made it, and never again. Tenant settings come with the campaign rules (contact hours, caps).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ..api.deps import record_id
from ..errors import CbwError
from ..models.access import Role, TokenCreate
from ..models.consent import Channel
from ..models.contact_rules import ContactHours, Day, TenantSettingsPatch
from ..models.subscriptions import DeliveryStatus, SubscriptionCreate, SubscriptionPatch
from ..models.users import UserCreate, UserPatch
from ..store.base import PageRequest
from .auth import WebCaller, checked_form, role_in, services_of
from .templating import render

router = APIRouter(include_in_schema=False)
Admin = Annotated[WebCaller, Depends(role_in(Role.ADMIN, doing="manage people, tokens and subscriptions"))]
IdPath = Annotated[str, Path(max_length=64)]
SAID = {
    "role": "The role is changed; it applies from their next click.",
    "removed": "Removed: they are signed out everywhere.",
    "revoked": "The token is revoked: requests with it are refused from now on.",
    "enabled": "The subscription is on again.",
    "disabled": "The subscription is off: nothing more is sent to it.",
    "redelivered": "The message will be sent again shortly.",
    "deleted": "The subscription is deleted.",
    "off": "The subscription is off: turn it on before sending a message again.",
    "settings": "The contact rules are saved; they apply from each voter's next step.",
}
CAP_ROWS = 3  # empty rows for frequency caps the settings form offers at least (always one more than there are)
MAX_CAP_ROWS = 20  # as many as a tenant may have
TOKEN_ROLES = [role.value for role in Role if role is not Role.SUPERADMIN]


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the form"
    return f"{where}: {first['msg']}"


def _page_request(value: str | None) -> PageRequest:
    return PageRequest(limit=50, cursor=value[:512] if value else None)


_id = record_id  # a path that cannot name a record is a 404 without a store round trip


async def _admin_page(request: Request, caller: WebCaller, *, status_code: int = 200, **shown: Any) -> Response:
    services = services_of(request)
    tenant = caller.principal.tenant
    query = request.query_params
    people = await services.users.list(tenant, _page_request(query.get("people")))
    tokens = await services.access.list_tokens(tenant, _page_request(query.get("tokens")))
    subscriptions = await services.subscriptions.list(tenant, _page_request(query.get("subscriptions")))
    settings = await services.tenant_settings.get(caller.principal, tenant)
    context: dict[str, Any] = {
        "settings": settings,
        "hours": settings.contact_hours or ContactHours(),
        "caps": [*settings.frequency_caps, *([None] * max(CAP_ROWS - len(settings.frequency_caps), 1))],
        "days": [day.value for day in Day],
        "channels": [channel.value for channel in Channel],
        "people": people,
        "tokens": tokens,
        "subscriptions": subscriptions,
        "roles": TOKEN_ROLES,
        "said": SAID.get(query.get("said", "")),
        "error": None,
        "invitation": None,
        "new_token": None,
        "new_subscription": None,
        "settings_error": None,
        "form": {},
    }
    context.update(shown)
    return render(request, "admin.html", caller=caller, status_code=status_code, **context)


async def _made(
    request: Request, caller: WebCaller, make: Callable[[], Awaitable[Any]], fields: dict[str, str], shown_as: str
) -> Response:
    """Run a form's `make`: what it made is shown once (201); bad input or a clash beside the form, as typed."""
    try:
        made = await make()
    except ValidationError as exc:
        return await _admin_page(request, caller, status_code=422, error=_problem(exc), form=fields)
    except CbwError as exc:
        if exc.status_code >= 500:
            raise
        return await _admin_page(request, caller, status_code=exc.status_code, error=exc.detail, form=fields)
    return await _admin_page(request, caller, status_code=201, **{shown_as: made})


def _done(said: str, anchor: str, target: str = "/admin") -> Response:
    return RedirectResponse(f"{target}?said={said}#{anchor}", status_code=303)


@router.get("/admin")
async def admin_page(request: Request, caller: Admin) -> Response:
    return await _admin_page(request, caller)


# ---------------------------------------------------------------------------------------------------- people
@router.post("/admin/people")
async def invite(request: Request, caller: Admin) -> Response:
    form = await checked_form(request, caller)
    fields = {key: form.get(key, "").strip() for key in ("email", "name", "role")}

    async def make() -> Any:
        body = UserCreate.model_validate({**fields, "name": fields["name"] or fields["email"].split("@")[0]})
        return await services_of(request).users.create(caller.principal, caller.principal.tenant, body)

    return await _made(request, caller, make, fields, "invitation")


@router.post("/admin/people/{user_id}/role")
async def change_role(request: Request, caller: Admin, user_id: IdPath) -> Response:
    form = await checked_form(request, caller)
    if user_id == caller.user.id:
        return await _admin_page(request, caller, status_code=409, error="You cannot change your own role here.")
    try:
        body = UserPatch.model_validate({"role": form.get("role", "")})
    except ValidationError as exc:
        return await _admin_page(request, caller, status_code=422, error=_problem(exc))
    await services_of(request).users.change(caller.principal.tenant, _id(user_id, "person"), body)
    return _done("role", "people")


@router.post("/admin/people/{user_id}/remove")
async def remove(request: Request, caller: Admin, user_id: IdPath) -> Response:
    await checked_form(request, caller)
    if user_id == caller.user.id:
        return await _admin_page(request, caller, status_code=409, error="You cannot remove yourself.")
    await services_of(request).users.delete(caller.principal.tenant, _id(user_id, "person"))
    return _done("removed", "people")


# ---------------------------------------------------------------------------------------------------- tokens
@router.post("/admin/tokens")
async def create_token(request: Request, caller: Admin) -> Response:
    form = await checked_form(request, caller)
    fields = {"role": form.get("role", ""), "name": form.get("name", "").strip() or None}
    try:
        body = TokenCreate.model_validate(fields)
        if body.role is Role.SUPERADMIN:
            return await _admin_page(request, caller, status_code=422, error="role: not a role for this page")
    except ValidationError as exc:
        return await _admin_page(request, caller, status_code=422, error=_problem(exc))
    made = await services_of(request).access.create_token(caller.principal, body)
    return await _admin_page(request, caller, status_code=201, new_token=made)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(request: Request, caller: Admin, token_id: IdPath) -> Response:
    await checked_form(request, caller)
    await services_of(request).access.revoke_token(caller.principal, caller.principal.tenant, _id(token_id, "token"))
    return _done("revoked", "tokens")


# ---------------------------------------------------------------------------------------------------- subscriptions
@router.post("/admin/subscriptions")
async def create_subscription(request: Request, caller: Admin) -> Response:
    form = await checked_form(request, caller)
    fields = {"url": form.get("url", "").strip(), "events": form.get("events", "").strip() or "*"}
    events = [name.strip() for name in fields["events"].replace("\n", ",").split(",") if name.strip()]

    async def make() -> Any:
        body = SubscriptionCreate.model_validate({"url": fields["url"], "events": events})
        return await services_of(request).subscriptions.create(caller.principal, body)

    return await _made(request, caller, make, fields, "new_subscription")


@router.get("/admin/subscriptions/{subscription_id}")
async def subscription_page(request: Request, caller: Admin, subscription_id: IdPath) -> Response:
    services = services_of(request)
    tenant = caller.principal.tenant
    subscription = await services.subscriptions.get(tenant, _id(subscription_id, "subscription"))
    wanted = request.query_params.get("status") or None
    status = DeliveryStatus(wanted) if wanted in {s.value for s in DeliveryStatus} else None
    deliveries = await services.subscriptions.deliveries(
        tenant, subscription.id, status, _page_request(request.query_params.get("cursor"))
    )
    return render(
        request,
        "admin_subscription.html",
        caller=caller,
        subscription=subscription,
        deliveries=deliveries,
        status=status.value if status else "",
        statuses=[s.value for s in DeliveryStatus],
        said=SAID.get(request.query_params.get("said", "")),
        error=None if wanted is None or status else "Status: choose pending, succeeded or failed.",
    )


@router.post("/admin/subscriptions/{subscription_id}/enabled")
async def switch_subscription(request: Request, caller: Admin, subscription_id: IdPath) -> Response:
    form = await checked_form(request, caller)
    enabled = form.get("enabled") == "true"
    await services_of(request).subscriptions.update(
        caller.principal, _id(subscription_id, "subscription"), SubscriptionPatch(enabled=enabled)
    )
    return _done("enabled" if enabled else "disabled", "top", f"/admin/subscriptions/{subscription_id}")


@router.post("/admin/subscriptions/{subscription_id}/delete")
async def delete_subscription(request: Request, caller: Admin, subscription_id: IdPath) -> Response:
    await checked_form(request, caller)
    await services_of(request).subscriptions.delete(caller.principal, _id(subscription_id, "subscription"))
    return _done("deleted", "subscriptions")


@router.post("/admin/subscriptions/{subscription_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, caller: Admin, subscription_id: IdPath, delivery_id: IdPath) -> Response:
    await checked_form(request, caller)
    target = f"/admin/subscriptions/{_id(subscription_id, 'subscription')}"
    try:
        await services_of(request).subscriptions.redeliver(
            caller.principal, subscription_id, _id(delivery_id, "delivery")
        )
    except CbwError as exc:
        if exc.status_code != 409:
            raise
        return RedirectResponse(f"{target}?said=off#deliveries", status_code=303)
    return _done("redelivered", "deliveries", target)


# ---------------------------------------------------------------------------------------------------- settings
@router.post("/admin/settings")
async def save_settings(request: Request, caller: Admin) -> Response:
    """The tenant's contact rules from the form: time zone, contact hours (days, times, channels), caps."""
    form = await checked_form(request, caller)
    caps = []
    for row in range(MAX_CAP_ROWS):
        channel, most, per = (form.get(f"cap_{part}_{row}", "").strip() for part in ("channel", "max", "per"))
        if channel or most or per:
            caps.append({"channel": channel, "max": most, "per": per})
    body = {
        "timezone": form.get("timezone", "").strip() or None,
        "contact_hours": {
            "days": [day.value for day in Day if form.get(f"day_{day.value}") == "on"],
            "start": form.get("start", "").strip(),
            "end": form.get("end", "").strip(),
            "channels": [c.value for c in Channel if form.get(f"hours_{c.value}") == "on"],
        },
        "frequency_caps": caps,
    }
    try:
        patch = TenantSettingsPatch.model_validate(body)
        await services_of(request).tenant_settings.patch(caller.principal, caller.principal.tenant, patch)
    except ValidationError as exc:
        return await _admin_page(request, caller, status_code=422, settings_error=_settings_problem(exc))
    return _done("settings", "settings")


def _settings_problem(exc: ValidationError) -> str:
    """The first problem, named as the form names its fields."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    names = {"timezone": "Time zone", "days": "Days", "start": "Opens", "end": "Closes", "channels": "Channels"}
    field = next((names[part] for part in reversed(loc) if part in names), None)
    if field is None and "frequency_caps" in loc:
        field = "Frequency cap"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{field or 'The form'}: {message}"
