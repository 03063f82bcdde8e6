"""Consent rules without a store: which channel an action uses (with `CBW_ACTION_CHANNELS`), what entering an
action on a refused channel does, and the inbound signature against Twilio's own published example."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cbworkflow.engine import steps
from cbworkflow.models.consent import BUILT_IN_ACTION_CHANNELS, Channel, parse_action_channels
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.services.inbound_sms import signature
from cbworkflow.settings import SettingsError, load_settings

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def test_the_signature_is_twilios_for_its_published_example() -> None:
    # The vector of Twilio's own SDK tests (RequestValidatorTest): token 12345, this URL and these fields.
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature("12345", url, list(reversed(params))) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="  # sorted by name
    assert signature("12346", url, params) != "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_action_channels_add_to_the_built_in_map() -> None:
    found = parse_action_channels(" robocall=phone, flyer = mail ,")
    assert found["robocall"] is Channel.PHONE
    assert found["flyer"] is Channel.MAIL
    assert found["sms"] is Channel.SMS
    assert found["door_canvass"] is Channel.DOOR
    assert parse_action_channels("") == dict(BUILT_IN_ACTION_CHANNELS)


@pytest.mark.parametrize(
    ("text", "says"),
    [("robocall", "not action=channel"), ("robocall=fax", "'fax' is not a channel"), ("=phone", "not action=channel")],
)
def test_a_bad_action_channel_pair_stops_the_start_with_the_variable_named(text: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(action_channels=text)
    assert str(caught.value).startswith("CBW_ACTION_CHANNELS:")
    assert says in str(caught.value)


def instance_at_start(action: str, transitions: dict[str, str]) -> WorkflowInstance:
    nodes: dict[str, Any] = {
        "reach": {"type": "action", "action": action, "transitions": transitions},
        "next": {"type": "action", "action": "door_canvass", "transitions": {"done": "end"}},
        "end": {"type": "end"},
    }
    return WorkflowInstance.model_validate(
        {
            "id": "i1",
            "tenant": "t",
            "contact_id": "c1",
            "template_id": "tpl",
            "template_version": "1.0",
            "status": "pending",
            "start_node": "reach",
            "nodes": nodes,
            "created_at": NOW,
            "updated_at": NOW,
        }
    )


def context(opted_out: dict[str, str], channels: str = "") -> steps.Context:
    contact = {"id": "c1", "name": "Pat", "opted_out": opted_out}
    return steps.Context(frozenset(), lambda: contact, parse_action_channels(channels))


def test_an_added_action_is_refused_on_its_channel() -> None:
    made = steps.start(
        instance_at_start("robocall", {"done": "end", "opted_out": "next"}),
        NOW,
        "system",
        ctx=context({"phone": NOW.isoformat()}, "robocall=phone"),
    )
    assert (made.instance.status, made.instance.current_node) == (InstanceStatus.ACTIVE, "next")
    exited = [e for e in made.events if e.type.value == "node_exited"]
    assert exited[0].data == {"outcome": "opted_out", "channel": "phone", "seconds": 0.0}


def test_an_action_without_a_channel_is_never_refused() -> None:
    made = steps.start(
        instance_at_start("robocall", {"done": "end"}), NOW, "system", ctx=context({c.value: "x" for c in Channel})
    )
    assert (made.instance.status, made.instance.current_node) == (InstanceStatus.ACTIVE, "reach")
    assert made.instance.task_since == NOW  # a person's task: no channel, no consent rule


def test_a_refused_action_without_the_outcome_cancels_with_the_reason() -> None:
    made = steps.start(instance_at_start("sms", {"sent": "end"}), NOW, "system", ctx=context({"sms": "x"}))
    assert made.instance.status is InstanceStatus.CANCELLED
    kinds = [e.type.value for e in made.events]
    assert kinds[-2:] == ["action_failed", "instance_cancelled"]
    assert made.events[-1].data["reason"] == "the contact opted out of sms"
