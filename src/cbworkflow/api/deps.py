"""Dependencies shared by the routes: the services, the caller, role checks, paging, path ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import Forbidden, InvalidInput, NotFound
from ..ids import ID_RE, SLUG_RE
from ..models.access import Principal, Role
from ..store.base import PageRequest
from ..wiring import Services


# Dependencies are `async def` even when they never await: FastAPI runs a plain `def` in a worker thread, a hop
# that cost more than the work on every request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


bearer_scheme = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer cbw_…`")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_principal(request: Request, services: ServicesDep, credentials: BearerDep) -> Principal:
    """The caller (FastAPI runs this once per request). The idempotency middleware may have authenticated already."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await services.access.authenticate(credentials.credentials.strip() if credentials else None)
        request.state.principal = principal
    request.app.state.rate_limiter.check(principal.token_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

READERS = (Role.ADMIN, Role.STAFF, Role.VIEWER)
STAFF = (Role.ADMIN, Role.STAFF)
ADMINS = (Role.ADMIN,)
VOLUNTEER_WORK = (Role.ADMIN, Role.STAFF, Role.VOLUNTEER)


def allow(*roles: Role, doing: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through only `roles` (a superadmin counts as an admin)."""
    allowed = set(roles) | ({Role.SUPERADMIN} if Role.ADMIN in roles else set())

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"the role {principal.role.value} may not {doing}")
        return principal

    return check


async def paging(
    limit: Annotated[int, Query(ge=1, le=500, description="rows per page (1-500)")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PagingDep = Annotated[PageRequest, Depends(paging)]


def record_id(value: str, kind: str) -> str:
    """A path id that cannot name a record (wrong shape, hostile bytes) is a 404 without a store round trip."""
    if not ID_RE.fullmatch(value):
        raise NotFound(f"no {kind} with id {value[:80]!r}")
    return value


MAX_TAG_FILTERS = 20


def tag_filters(tags: list[str] | None) -> list[str]:
    """Repeatable `tag` filters: every one must match; at most MAX_TAG_FILTERS of them."""
    tags = tags or []
    if len(tags) > MAX_TAG_FILTERS:
        raise InvalidInput(f"tag: at most {MAX_TAG_FILTERS} tag filters")
    return [tag_param(t) for t in tags]


def tag_param(tag: str) -> str:
    if not SLUG_RE.fullmatch(tag):
        raise InvalidInput("tag: a tag is a slug: lowercase letters, digits, '-' and '_', at most 64 characters")
    return tag


# Path parameters, described once for every route that takes them.
ContactIdPath = Annotated[str, Path(description="the contact's id (as `id` in its record)")]
TemplateIdPath = Annotated[str, Path(description="the workflow template's id, e.g. `county-outreach-v1`")]
InstanceIdPath = Annotated[str, Path(description="the instance's id (as `id` in its record)")]
TaskIdPath = Annotated[str, Path(description="the task's `instance_id`: a task is an instance waiting for a person")]
TokenIdPath = Annotated[str, Path(description="the token's id (as `id` in `GET /api/tokens`), not its secret")]
TagPath = Annotated[str, Path(description="a tag: lowercase letters, digits, `-` and `_`, at most 64 characters")]
