"""`GET /api/stream`: the tenant's events as Server-Sent Events, resumable (api.md § Events and subscriptions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse

from ...models.access import Principal, Role
from ...services.stream import StreamRequest
from ..deps import READERS, ServicesDep, allow
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/stream", tags=["events"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, Role.VOLUNTEER, doing="read the event stream"))]
InstanceQuery = Annotated[str | None, Query(min_length=1, max_length=64, description="only this instance's events")]
ContactQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="only this contact's events (its own and its instances')"),
]
TemplateQuery = Annotated[
    str | None, Query(min_length=1, max_length=64, description="only events of this template's instances")
]

STREAM_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: one message per event, `id:` its sequence, `data:` the event as JSON "
        "(as in a timeline, with `sequence`); a comment line every 15 s keeps the connection open",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get("", response_class=EventSourceResponse, responses={**STREAM_ANSWER, **error_responses(404)})
async def stream(
    services: ServicesDep,
    principal: Reader,
    instance_id: InstanceQuery = None,
    contact_id: ContactQuery = None,
    template_id: TemplateQuery = None,
    type: Annotated[
        list[str] | None, Query(max_length=40, description="event types (repeat, or comma-separated); any of them")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(description="the `id:` of the last event received: the stream resumes right after it"),
    ] = None,
    after: Annotated[
        str | None, Query(description="as `Last-Event-ID`, for clients that cannot set headers (curl, scripts)")
    ] = None,
) -> EventSourceResponse:
    """Events of the tenant as they are committed, oldest first, filtered by instance, contact, template or type
    (a volunteer sees only the instances it holds). Without `Last-Event-ID` it starts with what is committed from
    now on; with it, it first sends every matching event after that one that is still stored, so a client that
    reconnects misses nothing. A client too slow to take what it is sent is disconnected (and may resume)."""
    types = [part.strip() for value in type or [] for part in value.split(",") if part.strip()]
    asked = StreamRequest(instance_id, contact_id, template_id, types, last_event_id or after)
    where, start = await services.stream.open(principal, asked)

    async def messages() -> AsyncIterator[dict[str, str]]:
        async for event in services.stream.follow(principal.tenant, where, start):
            yield {"id": str(event.sequence), "data": event.model_dump_json()}

    settings = services.settings
    return EventSourceResponse(
        messages(), ping=settings.stream_heartbeat_s, send_timeout=settings.stream_send_timeout_s
    )
