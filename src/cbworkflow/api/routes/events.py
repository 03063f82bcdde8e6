"""`POST /api/events`: custom events that resume the instances waiting for them, reach goals and fire triggers
(api.md § Events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ...models.access import Principal
from ...models.events import EventPost, EventResult
from ..deps import STAFF, ServicesDep, allow
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/events", tags=["events"], responses=api_errors())

Staff = Annotated[Principal, Depends(allow(*STAFF, doing="send events"))]


@router.post("", response_model=EventResult, responses=error_responses(404))
async def post_event(services: ServicesDep, principal: Staff, body: EventPost) -> EventResult:
    """Raise a custom event: resume the instances waiting for `name` (the instance given, or the contact's, or
    every one in the tenant; at most 1,000 per request), complete the contact's instances whose template has a
    goal on it, and start instances whose template has a trigger on it, all in one transaction. Answers what it
    touched, and the triggers and goals that could not run (their `where` failed)."""
    return await services.events.post(principal, body)
