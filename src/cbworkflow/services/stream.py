"""The live stream (`GET /api/stream`): a tenant's events as they commit, read from the outbox by sequence.

Each client follows the outbox table itself, from where it stands: it reads a page, sends it, and waits for the
outbox signal only once it has caught up. So a client holds at most one page in memory, a slow client reads
less often instead of piling events up (the server's send blocks, then times out and drops it: it reconnects
with `Last-Event-ID` and reads what it missed from the table), and it never slows anyone else down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ..errors import InvalidInput, NotFound
from ..models.access import Principal, Role
from ..models.events import Event, EventType
from ..runtime.outbox import OutboxSignal
from ..store.base import EventFilter, Store, Tx

PAGE = 200  # events read (and held) at once per client
SCAN = 20_000  # sequences one read looks through when a filter skips most of them


@dataclass(frozen=True)
class StreamRequest:
    """What a client asked for, as the route received it."""

    instance_id: str | None = None
    contact_id: str | None = None
    template_id: str | None = None
    types: Sequence[str] = ()
    last_event_id: str | None = None


def resume_point(last_event_id: str | None) -> int | None:
    """The sequence a client saw last (`Last-Event-ID`), or None for "from now on"."""
    if last_event_id is None or not last_event_id.strip():
        return None
    text = last_event_id.strip()
    if not text.isdigit() or len(text) > 18:
        raise InvalidInput(
            f"Last-Event-ID {last_event_id[:40]!r}: not an event sequence (the `id:` of an event this stream sent)"
        )
    return int(text)


class EventStream:
    def __init__(self, store: Store, signal: OutboxSignal, *, heartbeat_s: float = 15.0) -> None:
        self.store = store
        self.signal = signal
        self.heartbeat_s = heartbeat_s

    async def open(self, principal: Principal, asked: StreamRequest) -> tuple[EventFilter, int]:
        """Check what was asked (unknown types → 422; an instance, contact or template this tenant does not have
        → 404) and where to start: after `Last-Event-ID`, else after the last event committed now."""
        known = {t.value for t in EventType}
        unknown = [t for t in asked.types if t not in known]
        if unknown:
            raise InvalidInput(f"type {unknown[0][:60]!r}: not an event type (one of {', '.join(sorted(known))})")
        after = resume_point(asked.last_event_id)
        held_by = principal.token_id if principal.role is Role.VOLUNTEER else None
        where = EventFilter(
            instance_id=asked.instance_id,
            contact_id=asked.contact_id,
            template_id=asked.template_id,
            types=tuple(asked.types),
            held_by=held_by,
        )

        def check(tx: Tx) -> int:
            if asked.instance_id is not None and tx.get_instance(asked.instance_id) is None:
                raise NotFound(f"no instance with id {asked.instance_id!r}")
            if asked.contact_id is not None and tx.get_contact(asked.contact_id) is None:
                raise NotFound(f"no contact with id {asked.contact_id!r}")
            if asked.template_id is not None and tx.get_template(asked.template_id) is None:
                raise NotFound(f"no workflow template with id {asked.template_id!r}")
            return tx.last_sequence() if after is None else after

        return where, await self.store.read(principal.tenant, check)

    async def follow(self, tenant: str, where: EventFilter, after: int) -> AsyncIterator[Event]:
        """Every matching event after `after`, in sequence order, then each one as it commits; forever."""
        while True:

            def page(tx: Tx, after: int = after) -> tuple[int, int, list[Event]]:
                head = tx.last_sequence()  # first: every sequence up to it is committed and visible now
                until = min(head, after + SCAN)
                return head, until, tx.events_after(after, PAGE, where, until=until) if until > after else []

            head, until, found = await self.store.read(tenant, page)
            for event in found:
                yield event
            if len(found) >= PAGE:
                after = found[-1].sequence or after
            else:  # every sequence up to `until` was looked at
                after = max(after, until)
            if after >= head:  # caught up: sleep until something commits (or a while, to look again anyway)
                await self.signal.wait_past(tenant, after, self.heartbeat_s)
