"""Texts people send back (`POST /api/inbound/sms`, api.md § Campaign work): STOP opts the number out of `sms`,
START opts it back in, anything else is the custom event `sms_received` for the contacts with that number.

The provider (Twilio, or one that signs the same way) signs each request: HMAC-SHA1 with the account's auth token
over the URL it called followed by every form field, sorted by name, as name and value. The URL is this service's
public address (`CBW_PUBLIC_URL`) with the path and query of the request, since behind a proxy the request's own
host is not what the provider called. A request whose signature does not match changes nothing (403).

- A message is acted on once: its `MessageSid` is kept for a day (the provider's retries, a replayed request).
- START undoes only an `sms` opt-out that came by text: one a person asked staff for stays until an admin undoes
  it, and a family member's START cannot undo it for the others on the number.
- Twilio's `OptOutType` field (`STOP`, `START`), when present, says what the provider did with the message (its
  own keywords, its Advanced Opt-Out list), and is followed over the words of the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..clock import Clock
from ..errors import Forbidden, NotFound
from ..models.consent import Channel
from ..models.events import EventType
from ..store.base import IdempotencyRecord, PageRequest, Store, Tx
from .consent import opt_in, opt_out
from .contacts import to_e164
from .custom_events import raise_event
from .triggers import Reaction, Reactions

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
RECEIVED_EVENT = "sms_received"
ACTOR = "inbound-sms"  # who the timeline says did it: the person, by text
MAX_BODY_CHARS = 1600  # ten SMS segments: the longest text a provider hands on
SEEN_ROUTE = "POST /api/inbound/sms"  # the messages acted on, kept beside Idempotency-Keys (their 24-hour window)
SOURCE_LOOKBACK = 200  # contact events read back to find who recorded the sms opt-out a START would undo
REFUSED = (
    "the X-Twilio-Signature header does not match this request (signed with CBW_SMS_AUTH_TOKEN over CBW_PUBLIC_URL "
    "and the request's path and query)"
)
log = logging.getLogger("cbworkflow.inbound")


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """What the provider puts in `X-Twilio-Signature` for a POST of `params` to `url`."""
    signed = url + "".join(name + value for name, value in sorted(params, key=lambda pair: pair[0]))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Received:
    """What one inbound text did: `kind` is `opted_out`, `opted_in` or `received`; the contacts it reached."""

    kind: str
    contact_ids: list[str] = field(default_factory=list)


class InboundSms:
    def __init__(
        self, store: Store, clock: Clock, reactions: Reactions, *, auth_token: str | None, public_url: str, region: str
    ) -> None:
        self.store = store
        self.clock = clock
        self.reactions = reactions
        self.auth_token = auth_token
        self.public_url = public_url
        self.region = region

    def may_be_signed(self, given: str | None) -> None:
        """403 at once, before the body is read, when the request cannot pass `check`: no signature, or no auth
        token on this server (nothing unsigned may opt anyone out or in; the answer does not say which)."""
        if not self.auth_token:
            log.warning("an inbound text was refused: CBW_SMS_AUTH_TOKEN is not set, so none can be checked")
            raise Forbidden(REFUSED)
        if not given or not given.strip():
            raise Forbidden(REFUSED)

    def check(self, path_and_query: str, params: Sequence[tuple[str, str]], given: str | None) -> None:
        """403 unless `given` is the signature of this request."""
        self.may_be_signed(given)
        assert self.auth_token is not None
        assert given is not None
        expected = signature(self.auth_token, self.public_url + path_and_query, params)
        if not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise Forbidden(REFUSED)

    async def receive(
        self, tenant: str, sender: str, body: str, message_id: str | None, opt_out_type: str | None = None
    ) -> Received:
        """Act on a text from `sender` (checked first with `check`). A number no contact has is answered all the
        same: the provider would otherwise send it again."""
        if await self.store.system_read(lambda stx: stx.get_tenant(tenant)) is None:
            raise NotFound(f"no tenant {tenant!r}")
        number = to_e164(sender, self.region)
        word = body.strip().upper()
        said = (opt_out_type or "").strip().upper()
        if said in ("STOP", "START"):
            word = word if word in (STOP_WORDS if said == "STOP" else START_WORDS) else said
        kind = "opted_out" if word in STOP_WORDS else "opted_in" if word in START_WORDS else "received"

        def run(tx: Tx) -> tuple[Received, list[Reaction]]:
            done = Received(kind)
            reactions: list[Reaction] = []
            now = self.clock.now()
            if number is None or not self._first_time(tx, message_id, now):
                return done, reactions
            for contact in tx.find_contacts(ids=(), external_ids=(), emails=(), phones=(number,)):
                done.contact_ids.append(contact.id)
                if kind == "opted_out":
                    reason = f"replied {word}"
                    opt_out(tx, self.reactions, contact, {Channel.SMS}, now, ACTOR, reason=reason, source="sms")
                elif kind == "opted_in":
                    if _opted_out_by_text(tx, contact.id):
                        opt_in(tx, contact, {Channel.SMS}, now, ACTOR, "sms")
                else:
                    data = {"body": body[:MAX_BODY_CHARS], "from": number}
                    if message_id:
                        data["message_id"] = message_id
                    raised = raise_event(
                        tx, self.reactions, name=RECEIVED_EVENT, data=data, now=now, actor=ACTOR, contact_id=contact.id
                    )
                    reactions.append(raised.reaction)
            return done, reactions

        done, reactions = await self.store.write(tenant, run)
        for reaction in reactions:
            self.reactions.done(reaction)
        self.reactions.wake()  # an opt-out may have moved instances on to due work
        return done

    @staticmethod
    def _first_time(tx: Tx, message_id: str | None, now: datetime) -> bool:
        """Whether this message is new (no `MessageSid`: taken as new); it is then remembered for a day."""
        if not message_id:
            return True
        record = IdempotencyRecord(SEEN_ROUTE, message_id[:200], ACTOR, "", now, done=True, status_code=200, body="")
        return tx.insert_idempotency(record)


def _opted_out_by_text(tx: Tx, contact_id: str) -> bool:
    """Whether the contact's latest `sms` opt-out came by text (a START may undo that one only)."""
    for event in tx.contact_events(contact_id, PageRequest(limit=SOURCE_LOOKBACK)).items:
        if event.type is EventType.CONTACT_OPTED_OUT and Channel.SMS.value in event.data.get("channels", ()):
            return bool(event.data.get("source") == "sms")
    return False
