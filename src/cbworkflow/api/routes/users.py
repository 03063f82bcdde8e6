"""People who sign in to the web pages (api.md § Campaign work `/api/users`): admins add, list and remove them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from ...models.access import Principal
from ...models.common import Page
from ...models.users import User, UserCreate, UserCreated, UserPatch
from ..deps import ADMINS, PagingDep, ServicesDep, allow, record_id
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/users", tags=["users"], responses=api_errors())

Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="manage the people who sign in"))]
UserIdPath = Annotated[str, Path(description="the person's id (as `id` in `GET /api/users`)")]


@router.post("", response_model=UserCreated, status_code=201, responses=error_responses(409))
async def create_user(services: ServicesDep, principal: Admin, body: UserCreate) -> UserCreated:
    """A person of the caller's tenant who signs in with an email and a password. Without `password` the answer
    holds `invitation_url`, valid 7 days and shown this once, where they choose one."""
    return await services.users.create(principal, principal.tenant, body)


@router.get("", response_model=Page[User])
async def list_users(services: ServicesDep, principal: Admin, page: PagingDep) -> Page[User]:
    """The tenant's people, newest first (never a password or an invitation secret)."""
    found = await services.users.list(principal.tenant, page)
    return Page[User](items=found.items, next_cursor=found.next_cursor)


@router.get("/{user_id}", response_model=User, responses=error_responses(404))
async def get_user(services: ServicesDep, principal: Admin, user_id: UserIdPath) -> User:
    """One person."""
    return await services.users.get(principal.tenant, record_id(user_id, "person"))


@router.patch("/{user_id}", response_model=User, responses=error_responses(404))
async def change_user(services: ServicesDep, principal: Admin, user_id: UserIdPath, body: UserPatch) -> User:
    """A new role or name; it takes effect at the person's next request, signed in or not."""
    return await services.users.change(principal.tenant, record_id(user_id, "person"), body)


@router.delete("/{user_id}", status_code=204, responses=error_responses(404))
async def delete_user(services: ServicesDep, principal: Admin, user_id: UserIdPath) -> Response:
    """The person can no longer sign in; every session of theirs ends at once."""
    await services.users.delete(principal.tenant, record_id(user_id, "person"))
    return Response(status_code=204)
