"""Texts people send back (`POST /api/inbound/sms`, api.md § Campaign work): STOP opts the number out of `sms`,
START opts it back in, anything else is the custom event `sms_received` for the contacts with that number.

The provider (Twilio, or one that signs the same way) signs each request: HMAC-SHA1 with the account's auth token
over the URL it called followed by every form field, sorted by name, as name and value. The URL is this service's
public address (`CBW_PUBLIC_URL`) with the path and query of the request, since behind a proxy the request's own
host is not what the provider called. A request whose signature does not match changes nothing (403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..clock import Clock
from ..errors import Forbidden, NotFound
from ..models.consent import Channel
from ..store.base import Store, Tx
from .consent import opt_in, opt_out
from .contacts import to_e164
from .custom_events import raise_event
from .triggers import Reaction, Reactions

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
RECEIVED_EVENT = "sms_received"
ACTOR = "inbound-sms"  # who the timeline says did it: the person, by text
MAX_BODY_CHARS = 1600  # ten SMS segments: the longest text a provider hands on


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

    def check(self, path_and_query: str, params: Sequence[tuple[str, str]], given: str | None) -> None:
        """403 unless `given` is the signature of this request; also when no auth token is set (nothing unsigned
        may opt anyone out or in)."""
        if not self.auth_token:
            raise Forbidden("inbound texts are not accepted: CBW_SMS_AUTH_TOKEN is not set on this server")
        expected = signature(self.auth_token, self.public_url + path_and_query, params)
        if not given or not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise Forbidden(
                "the X-Twilio-Signature header does not match this request (signed with CBW_SMS_AUTH_TOKEN over "
                "CBW_PUBLIC_URL and the request's path and query)"
            )

    async def receive(self, tenant: str, sender: str, body: str, message_id: str | None) -> Received:
        """Act on a text from `sender` (checked first with `check`). A number no contact has is answered all the
        same: the provider would otherwise send it again."""
        if await self.store.system_read(lambda stx: stx.get_tenant(tenant)) is None:
            raise NotFound(f"no tenant {tenant!r}")
        number = to_e164(sender, self.region)
        word = body.strip().upper()
        kind = "opted_out" if word in STOP_WORDS else "opted_in" if word in START_WORDS else "received"

        def run(tx: Tx) -> tuple[Received, list[Reaction]]:
            done = Received(kind)
            reactions: list[Reaction] = []
            if number is None:
                return done, reactions
            now = self.clock.now()
            for contact in tx.find_contacts(ids=(), external_ids=(), emails=(), phones=(number,)):
                done.contact_ids.append(contact.id)
                if kind == "opted_out":
                    reason = f"replied {word}"
                    opt_out(tx, self.reactions, contact, {Channel.SMS}, now, ACTOR, reason=reason, source="sms")
                elif kind == "opted_in":
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
