"""Contacts: create, change, tag, upsert from another CRM, delete (cascading to their instances), search.

Every change writes its contact-level events (`contact_events.py`) and lets the templates react to it (goals,
triggers: `triggers.py`) in its own transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import phonenumbers

from ..clock import Clock
from ..engine import steps
from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..ids import new_id
from ..models.access import Principal, Role
from ..models.contacts import Contact, ContactCreate, ContactFields, ContactPatch, FieldWarning, SavedContact
from ..models.events import Event
from ..store.base import ContactFilter, InstanceFilter, Page, PageRequest, Store, Tx
from ..store.phones import name_key
from .contact_events import change_events, happenings, tag_event
from .triggers import Reaction, Reactions

T = TypeVar("T")


def to_e164(phone: str | None, region: str) -> str | None:
    """The number in E.164 when it parses as a possible number, else None (the phone is kept as given)."""
    if not phone:
        return None
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def saved(contact: Contact, phone_given: bool, region: str) -> SavedContact:
    """The answer to a write: the contact, with a warning when the phone it was given could not be read.

    The contact is stored all the same (the phone as given, `phone_e164` null): refusing would lose a number a
    person can still dial by hand, and an import of thousands of rows should not fail on one odd phone."""
    warnings = []
    if phone_given and contact.phone and contact.phone.strip() and contact.phone_e164 is None:
        warnings.append(
            FieldWarning(
                field="phone",
                message=f"{contact.phone!r} could not be read as a phone number (for region {region}; a number "
                "elsewhere needs its country code, such as +44); it is stored as given, and texts and calls will "
                "not use it",
            )
        )
    return SavedContact(**contact.model_dump(), warnings=warnings)


def may_see(tx: Tx, principal: Principal, contact_id: str, now: datetime) -> bool:
    """Whether the caller may see (and act on) the contact: a volunteer only while holding one of its tasks."""
    if principal.role is not Role.VOLUNTEER:
        return True
    return any(i.held_by_token(principal.token_id, now) for i in tx.unfinished_instances_of_contact(contact_id))


MAX_TAGS = 100  # as many as a contact body may carry
MIN_SUBSTRING_SEARCH = 3  # a trigram index answers substrings of three characters or more


class ContactService:
    def __init__(self, store: Store, clock: Clock, phone_region: str, reactions: Reactions | None = None) -> None:
        self.store = store
        self.clock = clock
        self.region = phone_region
        self.reactions = reactions or Reactions()

    def _changed(self, tx: Tx, before: Contact | None, after: Contact, actor: str, source: str) -> Reaction:
        """After `tx` stored the contact: its contact-level events, and what its change makes the templates do
        (goals reached, triggers fired), in the same transaction."""
        now = after.updated_at
        tx.append_events(change_events(before, after, now, actor, source))
        return self.reactions.react(tx, happenings(before, after), now=now, actor=actor)

    async def _write(self, tenant: str, run: Callable[[Tx], tuple[T, Reaction]]) -> T:
        result, reaction = await self.store.write(tenant, run)
        self.reactions.done(reaction)
        return result

    def _check_external_id(self, tx: Tx, external_id: str | None, contact_id: str) -> None:
        if external_id is None:
            return
        other = tx.get_contact_by_external_id(external_id)
        if other is not None and other.id != contact_id:
            raise Conflict(f"external_id {external_id!r} already belongs to contact {other.id}")

    # ---------------------------------------------------------------- reads
    async def get(self, principal: Principal, contact_id: str) -> Contact:
        def run(tx: Tx) -> Contact:
            contact = tx.get_contact(contact_id)
            if contact is None:
                raise NotFound(f"no contact with id {contact_id!r}")
            if not may_see(tx, principal, contact_id, self.clock.now()):
                raise Forbidden("a volunteer may read only the contacts of tasks it holds")
            return contact

        return await self.store.read(principal.tenant, run)

    async def list(self, tenant: str, where: ContactFilter, page: PageRequest) -> Page[Contact]:
        return await self.store.read(tenant, lambda tx: tx.list_contacts(where, page))

    async def search(self, tenant: str, query: str, page: PageRequest) -> Page[Contact]:
        """Three or more characters: anywhere in name, email or phone digits. One or two: the start of a name,
        alphabetically (a substring that short would match nearly everyone)."""
        text = query.strip()
        if not text:
            raise InvalidInput("q: type at least one character to search for")
        if any(ord(ch) < 32 for ch in query):
            raise InvalidInput("q: control characters cannot be searched for")
        if len(text) < MIN_SUBSTRING_SEARCH:
            prefix = name_key(text)
            return await self.store.read(tenant, lambda tx: tx.search_names(prefix, page))
        return await self.store.read(tenant, lambda tx: tx.search_contacts(query, page))

    async def timeline(self, tenant: str, contact_id: str, page: PageRequest) -> Page[Event]:
        def run(tx: Tx) -> Page[Event]:
            if tx.get_contact(contact_id) is None:
                raise NotFound(f"no contact with id {contact_id!r}")
            return tx.contact_events(contact_id, page)

        return await self.store.read(tenant, run)

    # ---------------------------------------------------------------- writes
    def _new(self, tenant: str, contact_id: str, fields: ContactFields) -> Contact:
        now = self.clock.now()
        return Contact(
            id=contact_id,
            tenant=tenant,
            **fields.model_dump(exclude={"id"}),
            phone_e164=to_e164(fields.phone, self.region),
            created_at=now,
            updated_at=now,
        )

    async def create(self, principal: Principal, body: ContactCreate) -> SavedContact:
        contact = self._new(principal.tenant, body.id or new_id(), body)

        def run(tx: Tx) -> tuple[Contact, Reaction]:
            if tx.get_contact(contact.id) is not None:
                raise Conflict(f"a contact with id {contact.id!r} already exists")
            if tx.list_instances(InstanceFilter(contact_id=contact.id), PageRequest(limit=1)).items:
                raise Conflict(
                    f"id {contact.id!r} belonged to a deleted contact whose instances are kept; choose another id"
                )
            self._check_external_id(tx, contact.external_id, contact.id)
            tx.insert_contact(contact)
            return contact, self._changed(tx, None, contact, principal.token_id, "api")

        return saved(await self._write(principal.tenant, run), True, self.region)

    async def patch(self, principal: Principal, contact_id: str, body: ContactPatch) -> SavedContact:
        changes = body.model_dump(include=body.model_fields_set)
        if changes.get("name", "") is None:
            changes.pop("name")
        for key in ("tags", "metadata"):
            if key in changes and changes[key] is None:
                changes[key] = [] if key == "tags" else {}

        def run(tx: Tx) -> tuple[Contact, Reaction]:
            contact = tx.get_contact(contact_id)
            if contact is None:
                raise NotFound(f"no contact with id {contact_id!r}")
            updated = contact.model_copy(update={**changes, "updated_at": self.clock.now()})
            if "phone" in changes:
                updated.phone_e164 = to_e164(updated.phone, self.region)
            self._check_external_id(tx, updated.external_id, contact_id)
            tx.update_contact(updated)
            return updated, self._changed(tx, contact, updated, principal.token_id, "api")

        return saved(await self._write(principal.tenant, run), "phone" in changes, self.region)

    async def upsert_by_external_id(
        self, principal: Principal, external_id: str, fields: ContactFields
    ) -> tuple[SavedContact, bool]:
        """Create or replace the contact with this external id; returns (contact, created)."""
        fields = fields.model_copy(update={"external_id": external_id})

        def run(tx: Tx) -> tuple[tuple[Contact, bool], Reaction]:
            existing = tx.get_contact_by_external_id(external_id)
            if existing is None:
                contact = self._new(principal.tenant, new_id(), fields)
                tx.insert_contact(contact)
                return (contact, True), self._changed(tx, None, contact, principal.token_id, "upsert")
            replacement = self._new(principal.tenant, existing.id, fields)
            replacement.created_at = existing.created_at
            replacement.workflow_instance_ids = existing.workflow_instance_ids
            replacement.opted_out = existing.opted_out  # consent is not a field a CRM sync replaces
            tx.update_contact(replacement)
            return (replacement, False), self._changed(tx, existing, replacement, principal.token_id, "upsert")

        contact, created = await self._write(principal.tenant, run)
        return saved(contact, True, self.region), created

    async def change_tag(self, principal: Principal, contact_id: str, tag: str, add: bool) -> Contact:
        def run(tx: Tx) -> tuple[Contact, Reaction]:
            contact = tx.get_contact(contact_id)
            if contact is None:
                raise NotFound(f"no contact with id {contact_id!r}")
            if (tag in contact.tags) == add:
                return contact, Reaction()
            if add and len(contact.tags) >= MAX_TAGS:
                raise Conflict(f"contact {contact_id!r} already has {MAX_TAGS} tags, the most a contact may have")
            tags = [*contact.tags, tag] if add else [t for t in contact.tags if t != tag]
            now = self.clock.now()
            updated = contact.model_copy(update={"tags": tags, "updated_at": now})
            tx.update_contact(updated)
            tx.append_events([tag_event(updated, tag, add, now, principal.token_id)])
            return updated, self.reactions.react(tx, happenings(contact, updated), now=now, actor=principal.token_id)

        return await self._write(principal.tenant, run)

    async def delete(self, principal: Principal, contact_id: str, cascade: bool) -> None:
        """Delete a contact. Unfinished instances block it (409) unless `cascade`, which cancels them first.

        Instances are kept (cancelled or finished) as the audit record of the outreach; their contact is gone.
        """
        now = self.clock.now()

        def run(tx: Tx) -> None:
            if tx.get_contact(contact_id) is None:
                raise NotFound(f"no contact with id {contact_id!r}")
            unfinished = tx.unfinished_instances_of_contact(contact_id)
            if unfinished and not cascade:
                raise Conflict(
                    f"contact {contact_id!r} has {len(unfinished)} unfinished instance(s); "
                    "cancel them first or delete with ?cascade=true",
                    instance_ids=[i.id for i in unfinished],
                )
            for instance in unfinished:
                step = steps.cancel(instance, now, principal.token_id, reason="contact deleted")
                tx.update_instance(step.instance)
                tx.append_events(step.events)
            tx.delete_contact(contact_id)

        await self.store.write(principal.tenant, run)
