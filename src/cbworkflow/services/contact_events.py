"""Contact-level events (no instance): what changed on a contact, written in the transaction of the change, and
the happenings the change is for the templates' triggers and goals.

- `contact_created` (data: `source`, the contact's `tags`): a create, an upsert or an import row that made it.
  Its first tags are in it, not in tag events of their own (an import of 100,000 tagged contacts writes one event
  per contact), but each of them fires `tag_added` triggers and goals all the same.
- `contact_updated` (data: `fields`, the names of the fields that changed; `source`): a patch, an upsert or an
  import row that changed something. Nothing changed: no event.
- `contact_tag_added` / `tag_removed` (data: `tag`): a tag added to, or taken from, a stored contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..ids import new_id
from ..models.contacts import Contact
from ..models.events import Event, EventType
from .happenings import Happening

FIELDS = ("name", "email", "phone", "county", "organization", "role", "external_id", "timezone", "tags", "metadata")
"""The fields a person gives a contact; `contact_updated` names those that changed."""


def contact_event(
    contact: Contact, kind: EventType, message: str, data: dict[str, Any], now: datetime, actor: str
) -> Event:
    return Event(id=new_id(), type=kind, timestamp=now, actor=actor, data=data, message=message, contact_id=contact.id)


def tag_event(contact: Contact, tag: str, added: bool, now: datetime, actor: str) -> Event:
    if added:
        return contact_event(contact, EventType.CONTACT_TAG_ADDED, f"Tagged {tag}", {"tag": tag}, now, actor)
    return contact_event(contact, EventType.TAG_REMOVED, f"Untagged {tag}", {"tag": tag}, now, actor)


def changed_fields(before: Contact, after: Contact) -> list[str]:
    return [name for name in FIELDS if getattr(before, name) != getattr(after, name)]


def change_events(before: Contact | None, after: Contact, now: datetime, actor: str, source: str) -> list[Event]:
    """The events of a contact created (`before` None) or changed: none when nothing changed."""
    if before is None:
        data = {"source": source, "tags": list(after.tags)}
        return [contact_event(after, EventType.CONTACT_CREATED, f"Created ({source})", data, now, actor)]
    fields = changed_fields(before, after)
    if not fields:
        return []
    data = {"fields": fields, "source": source}
    events = [contact_event(after, EventType.CONTACT_UPDATED, f"Updated {', '.join(fields)}", data, now, actor)]
    events += [tag_event(after, tag, True, now, actor) for tag in after.tags if tag not in before.tags]
    events += [tag_event(after, tag, False, now, actor) for tag in before.tags if tag not in after.tags]
    return events


def happenings(before: Contact | None, after: Contact) -> list[Happening]:
    """What the change is for triggers and goals: a creation and each of its tags, or each tag added."""
    if before is None:
        return [Happening(after, "contact_created", new=True)] + [
            Happening(after, "tag_added", tag=tag, new=True) for tag in after.tags
        ]
    return [Happening(after, "tag_added", tag=tag) for tag in after.tags if tag not in before.tags]
