"""Health, metrics, tenants and tokens (api.md § Other)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse

from ...errors import Unauthorized
from ...models.access import Principal, Role, Tenant, TenantCreate, TenantCreated, Token, TokenCreate, TokenCreated
from ...models.common import Page
from ...models.contact_rules import TenantSettings, TenantSettingsPatch
from ..deps import ADMINS, PagingDep, ServicesDep, TokenIdPath, allow, record_id
from ..errors import api_errors, error_responses
from ..metrics import CONTENT_TYPE, Metrics, authorized

log = logging.getLogger("cbworkflow.api")
router = APIRouter(tags=["admin"])
api = APIRouter(prefix="/api", tags=["admin"], responses=api_errors())

Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="manage tokens"))]
Superadmin = Annotated[Principal, Depends(allow(Role.SUPERADMIN, doing="manage tenants"))]
RulesAdmin = Annotated[Principal, Depends(allow(*ADMINS, doing="read or change the tenant's contact rules"))]


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    """Answers 200 while the process runs, whatever the store's state (a liveness probe)."""
    return {"status": "ok"}


@router.get("/readyz", summary="The store is reachable", responses={503: {"description": "store unreachable"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the store answers a query, 503 when it cannot be reached (a readiness probe)."""
    try:
        await services.store.ping()
    except Exception:
        log.exception("readiness check failed")
        return JSONResponse({"status": "unavailable", "detail": "the store cannot be reached"}, 503)
    return JSONResponse({"status": "ok", "store": services.store.describe().split(":", 1)[0]})


@router.get(
    "/metrics",
    summary="Prometheus metrics (open unless CBW_METRICS_TOKEN is set)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **error_responses(401)},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Aggregate counts only (no tenant, id or personal data); see `api/metrics.py` for the series."""
    token = services.settings.metrics_token
    if token is not None and not authorized(request.headers.get("authorization"), token):
        raise Unauthorized("this server's /metrics asks for its metrics token: Authorization: Bearer <token>")
    found: Metrics = request.app.state.metrics
    await found.refresh_instance_counts(services.store)
    return Response(found.render(), media_type=CONTENT_TYPE)


@api.post("/tenants", response_model=TenantCreated, status_code=201, responses=error_responses(409))
async def create_tenant(services: ServicesDep, principal: Superadmin, body: TenantCreate) -> TenantCreated:
    """A new tenant with its first admin token (shown this once)."""
    return await services.access.create_tenant(principal, body)


@api.get("/tenants", response_model=Page[Tenant])
async def list_tenants(services: ServicesDep, principal: Superadmin, page: PagingDep) -> Page[Tenant]:
    """Every tenant, newest first (superadmin only)."""
    found = await services.access.list_tenants(principal, page)
    return Page[Tenant](items=found.items, next_cursor=found.next_cursor)


TenantIdPath = Annotated[str, Path(description="the tenant's id", max_length=64)]


@api.get("/tenants/{tenant_id}/settings", response_model=TenantSettings, responses=error_responses(404))
async def get_tenant_settings(services: ServicesDep, principal: RulesAdmin, tenant_id: TenantIdPath) -> TenantSettings:
    """The tenant's contact rules: the time zone of contacts whose own is unknown, contact hours and frequency
    caps (an admin of the tenant, or a superadmin)."""
    return await services.tenant_settings.get(principal, tenant_id)


@api.patch("/tenants/{tenant_id}/settings", response_model=TenantSettings, responses=error_responses(404))
async def patch_tenant_settings(
    services: ServicesDep, principal: RulesAdmin, tenant_id: TenantIdPath, body: TenantSettingsPatch
) -> TenantSettings:
    """Change the tenant's contact rules; they apply from the next step of every instance (a step waiting for
    the hours keeps the time it was given, and is checked again when it comes)."""
    return await services.tenant_settings.patch(principal, tenant_id, body)


@api.post("/tokens", response_model=TokenCreated, status_code=201, responses=error_responses(404))
async def create_token(services: ServicesDep, principal: Admin, body: TokenCreate) -> TokenCreated:
    """The secret is in the answer this once; only its hash is stored."""
    return await services.access.create_token(principal, body)


@api.get("/tokens", response_model=Page[Token])
async def list_tokens(services: ServicesDep, principal: Admin, page: PagingDep) -> Page[Token]:
    """The tenant's API tokens (their names, roles and ids; never their secrets)."""
    found = await services.access.list_tokens(principal.tenant, page)
    return Page[Token](items=found.items, next_cursor=found.next_cursor)


@api.delete("/tokens/{token_id}", status_code=204, responses=error_responses(404))
async def revoke_token(services: ServicesDep, principal: Admin, token_id: TokenIdPath) -> Response:
    """Revoked at once: the next request with it answers 401."""
    await services.access.revoke_token(principal, principal.tenant, record_id(token_id, "token"))
    return Response(status_code=204)
