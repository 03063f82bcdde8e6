"""Consent (workflows.md § Consent and contact rules): the channels a contact can be reached on, which channel each
action uses, and the bodies of the opt-out routes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from .common import RequestModel, distinct


class Channel(StrEnum):
    """A way of reaching a person that they can refuse on its own."""

    SMS = "sms"
    EMAIL = "email"
    PHONE = "phone"
    DOOR = "door"
    MAIL = "mail"


ALL_CHANNELS: frozenset[Channel] = frozenset(Channel)

# Which channel each built-in action uses; `CBW_ACTION_CHANNELS` adds more. An action with no channel (a webhook to
# a CRM, `emit_event`) reaches nobody, so consent does not apply to it.
BUILT_IN_ACTION_CHANNELS: Mapping[str, Channel] = {
    "sms": Channel.SMS,
    "email": Channel.EMAIL,
    "phone_call": Channel.PHONE,
    "door_canvass": Channel.DOOR,
    "mail": Channel.MAIL,
}


def parse_action_channels(text: str) -> dict[str, Channel]:
    """`robocall=phone,flyer=mail` → {"robocall": Channel.PHONE, …}: the built-in map with these added (or
    changed). Raises ValueError naming the pair that is wrong."""
    found: dict[str, Channel] = dict(BUILT_IN_ACTION_CHANNELS)
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        action, sep, channel = (piece.strip() for piece in pair.partition("="))
        if not sep or not action or not channel:
            raise ValueError(f"{pair!r} is not action=channel, e.g. robocall=phone")
        if channel not in ALL_CHANNELS:
            names = ", ".join(c.value for c in Channel)
            raise ValueError(f"{pair!r}: {channel!r} is not a channel ({names})")
        found[action] = Channel(channel)
    return found


Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class OptOutBody(RequestModel):
    """Body of `POST /api/contacts/{id}/opt-out`."""

    @model_validator(mode="before")
    @classmethod
    def _no_null_channels(cls, data: Any) -> Any:
        if isinstance(data, dict) and "channels" in data and data["channels"] is None:
            raise ValueError("channels: leave it out for every channel, or list them; null is neither")
        return data

    model_config = ConfigDict(json_schema_extra={"examples": [{"channels": ["sms"], "reason": "asked on the phone"}]})

    channels: Annotated[list[Channel], Field(min_length=1), AfterValidator(distinct)] | None = None
    """The channels the person refuses (`sms`, `email`, `phone`, `door`, `mail`); absent: every channel, which also
    cancels every unfinished instance of the contact, in every template."""
    reason: Reason | None = None
    """Why, in words (kept on the `contact_opted_out` event), e.g. `asked on the phone`."""
