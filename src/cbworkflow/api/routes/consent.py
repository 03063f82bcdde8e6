"""Consent (api.md § Campaign work): opt-outs recorded by staff, undone by an admin, and texts people send back."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from ...errors import InvalidInput
from ...models.access import Principal
from ...models.consent import Channel, OptOutBody
from ...models.contacts import Contact
from ...services.access import DEFAULT_TENANT
from ..deps import ADMINS, VOLUNTEER_WORK, ContactIdPath, ServicesDep, allow, record_id
from ..errors import api_errors, error_responses

router = APIRouter(tags=["consent"], responses=api_errors())

Worker = Annotated[Principal, Depends(allow(*VOLUNTEER_WORK, doing="record an opt-out"))]
Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="undo an opt-out"))]
TWIML = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>\n'
MAX_FIELDS = 200  # a provider's inbound form has a few dozen
READ = ("From", "Body", "MessageSid", "OptOutType")  # the fields acted on: each must be there once at most


@router.post("/api/contacts/{contact_id}/opt-out", response_model=Contact, responses=error_responses(404))
async def opt_out(services: ServicesDep, principal: Worker, contact_id: ContactIdPath, body: OptOutBody) -> Contact:
    """The person refuses `channels` (all of them when absent). From this transaction on, nothing is sent to them
    and no volunteer is asked to reach them on those channels: each of their instances at such a step takes the
    outcome `opted_out`, or is cancelled when the step has none. Refusing every channel cancels every unfinished
    instance of the contact, in every template. A volunteer may record it for the contact of a task it holds."""
    channels = body.channels
    return await services.consent.opt_out(principal, record_id(contact_id, "contact"), channels, body.reason)


@router.delete("/api/contacts/{contact_id}/opt-out", response_model=Contact, responses=error_responses(404))
async def opt_in(
    services: ServicesDep,
    principal: Admin,
    contact_id: ContactIdPath,
    channel: Annotated[Channel | None, Query(description="the channel to undo; absent: every channel")] = None,
) -> Contact:
    """Undo an opt-out (for a mistake, or a person who asked to be contacted again). Instances it cancelled stay
    cancelled: enrol the contact again."""
    return await services.consent.opt_in(principal, record_id(contact_id, "contact"), channel)


@router.post(
    "/api/inbound/sms",
    response_class=Response,
    responses={
        200: {"description": "TwiML with no reply", "content": {"text/xml": {}}},
        **error_responses(403, 404, 429),
    },
)
async def inbound_sms(
    request: Request,
    services: ServicesDep,
    signature: Annotated[
        str | None, Header(alias="X-Twilio-Signature", description="the provider's signature of this request")
    ] = None,
    tenant: Annotated[str, Query(max_length=64, description="the tenant the number belongs to")] = DEFAULT_TENANT,
) -> Response:
    """A text someone sent to the campaign's number, as Twilio posts it (form fields `From`, `Body`, …), signed
    with `CBW_SMS_AUTH_TOKEN` (403 when the signature does not match, and nothing changes). `STOP`, `STOPALL`,
    `UNSUBSCRIBE`, `CANCEL`, `END` or `QUIT` alone opt every contact with that number out of `sms`; `START` or
    `UNSTOP` opt them back in; any other text is the event `sms_received` for them. Answers TwiML with no reply
    (the provider sends its own opt-out confirmation)."""
    client = request.client.host if request.client else "unknown"
    request.app.state.rate_limiter.check(f"inbound-sms:{client}", "this client")  # anyone may post here
    services.inbound_sms.may_be_signed(signature)  # before the body is read
    raw = request.scope.get("state", {}).get("raw_body", b"")
    try:
        params = parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise InvalidInput(f"the form has more than {MAX_FIELDS} fields, more than a provider sends") from None
    query = request.url.query
    services.inbound_sms.check(request.url.path + (f"?{query}" if query else ""), params, signature)
    names = [name for name, _ in params]
    if twice := sorted({name for name in READ if names.count(name) > 1}):
        raise InvalidInput(f"the form names {', '.join(twice)} more than once")
    fields = dict(params)
    await services.inbound_sms.receive(
        tenant, fields.get("From", ""), fields.get("Body", ""), fields.get("MessageSid"), fields.get("OptOutType")
    )
    return Response(TWIML, media_type="text/xml")
