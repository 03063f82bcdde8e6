"""Consent: a contact's opt-outs per channel (workflows.md § Consent and contact rules).

An opt-out is written in one transaction with everything it changes: the contact's `opted_out`, the
`contact_opted_out` event, and the contact's unfinished instances. Opting out of every channel cancels each of them,
in every template; opting out of some channels moves those whose task (a person's step) is on one of them on at once,
with the outcome `opted_out` or a cancellation. An automatic step (a text the worker sends) is left to the worker,
which re-reads consent just before the send (`runtime.worker`): an opt-out committed a moment before that wins,
and a text already past that check was sent before the opt-out, so its step ends as sent. Instances that reach a
refused action later are turned away when they enter it (`engine.entering`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import partial

from ..clock import Clock
from ..engine import steps
from ..errors import Forbidden, NotFound
from ..models.access import Principal
from ..models.consent import ALL_CHANNELS, Channel
from ..models.contacts import Contact
from ..models.events import EventType
from ..store.base import Store, Tx
from .contact_events import contact_event
from .contacts import may_see
from .triggers import Reactions

EVERY_CHANNEL_REASON = "the contact opted out of every channel"


def _names(channels: Collection[Channel]) -> str:
    return ", ".join(sorted(channel.value for channel in channels))


def opt_out(
    tx: Tx,
    reactions: Reactions,
    contact: Contact,
    channels: Collection[Channel],
    now: datetime,
    actor: str,
    *,
    reason: str | None = None,
    source: str = "api",
) -> Contact:
    """Opt `contact` out of `channels` in `tx`, with what follows for its instances. Channels it had refused
    already keep their first time; when none is new, nothing changes and no event is written."""
    new = [channel for channel in sorted(channels) if channel not in contact.opted_out]
    if not new:
        return contact
    updated = contact.model_copy(
        update={"opted_out": {**contact.opted_out, **dict.fromkeys(new, now)}, "updated_at": now}
    )
    tx.update_contact(updated)
    data: dict[str, object] = {"channels": [c.value for c in new], "source": source}
    if reason:
        data["reason"] = reason
    tx.append_events(
        [contact_event(updated, EventType.CONTACT_OPTED_OUT, f"Opted out of {_names(new)}", data, now, actor)]
    )
    everything = ALL_CHANNELS <= set(updated.opted_out)
    snapshot = updated.model_dump(mode="json")
    for instance in tx.unfinished_instances_of_contact(contact.id):  # each locked
        if everything:
            step = steps.cancel(instance, now, actor, reason=EVERY_CHANNEL_REASON)
        elif instance.task_since is None:
            continue  # not a person's task: an automatic step is the worker's to check (see above)
        else:
            ctx = steps.Context(
                reactions.automatic_actions,
                lambda: snapshot,
                reactions.channels,
                partial(tx.contact_rules, instance.template_id),
            )
            found = steps.channel_refused(instance, now, ctx)
            if found is None:
                continue
            step = found
        tx.update_instance(step.instance)
        tx.append_events(step.events)
    return updated


def opt_in(tx: Tx, contact: Contact, channels: Collection[Channel], now: datetime, actor: str, source: str) -> Contact:
    """Undo opt-outs of `channels`; instances cancelled by them stay cancelled (enrol the contact again)."""
    gone = [channel for channel in sorted(channels) if channel in contact.opted_out]
    if not gone:
        return contact
    kept = {channel: at for channel, at in contact.opted_out.items() if channel not in gone}
    updated = contact.model_copy(update={"opted_out": kept, "updated_at": now})
    tx.update_contact(updated)
    data = {"channels": [c.value for c in gone], "source": source}
    tx.append_events(
        [contact_event(updated, EventType.CONTACT_OPTED_IN, f"Opted back in to {_names(gone)}", data, now, actor)]
    )
    return updated


class ConsentService:
    def __init__(self, store: Store, clock: Clock, reactions: Reactions) -> None:
        self.store = store
        self.clock = clock
        self.reactions = reactions

    def _contact(self, tx: Tx, principal: Principal, contact_id: str) -> Contact:
        contact = tx.get_contact(contact_id)
        if contact is None:
            raise NotFound(f"no contact with id {contact_id!r}")
        if not may_see(tx, principal, contact_id, self.clock.now()):
            raise Forbidden("a volunteer may opt out only the contacts of tasks it holds")
        return contact

    async def opt_out(
        self, principal: Principal, contact_id: str, channels: Collection[Channel] | None, reason: str | None
    ) -> Contact:
        """`channels` None: every channel."""
        wanted = ALL_CHANNELS if channels is None else frozenset(channels)

        def run(tx: Tx) -> Contact:
            contact = self._contact(tx, principal, contact_id)
            now = self.clock.now()
            return opt_out(tx, self.reactions, contact, wanted, now, principal.token_id, reason=reason)

        updated = await self.store.write(principal.tenant, run)
        self.reactions.wake()  # an instance moved on by `opted_out` may have work due
        return updated

    async def opt_in(self, principal: Principal, contact_id: str, channel: Channel | None) -> Contact:
        """`channel` None: every channel."""
        wanted = ALL_CHANNELS if channel is None else frozenset({channel})

        def run(tx: Tx) -> Contact:
            contact = self._contact(tx, principal, contact_id)
            return opt_in(tx, contact, wanted, self.clock.now(), principal.token_id, "api")

        return await self.store.write(principal.tenant, run)
