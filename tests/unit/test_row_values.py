"""The rows of contacts and instances are read off the models' fields, without a model dump: they hold exactly
what the dump held (the server's own columns added), for models with every field set and with none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cbworkflow.models.consent import Channel
from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.store.sql import rows

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def _contacts() -> list[Contact]:
    full = Contact(
        id="c1",
        tenant="t",
        name=" Ärzte Voter ",
        email="v@example.org",
        phone="555 123 4567",
        phone_e164="+15551234567",
        county="North",
        organization="Library",
        role="Captain",
        external_id="x-1",
        timezone="America/Chicago",
        opted_out={Channel.SMS: T0, Channel.EMAIL: T0 + timedelta(hours=1)},
        tags=["voter", "wave-1"],
        metadata={"nested": {"list": [1, None, 2.5]}},
        workflow_instance_ids=["i1"],
        created_at=T0,
        updated_at=T0 + timedelta(days=1),
    )
    return [full, Contact(id="c2", tenant="t", name="Pat", created_at=T0, updated_at=T0)]


def _instances() -> list[WorkflowInstance]:
    full = WorkflowInstance(
        id="i1",
        tenant="t",
        contact_id="c1",
        template_id="tpl",
        template_version="1.2",
        start_node="call",
        current_node="call",
        node_entered_at=T0,
        status=InstanceStatus.PAUSED,
        state={"a": [1, {"b": None}]},
        nodes={},
        tags=["bulk"],
        metadata={"m": 1},
        created_at=T0,
        updated_at=T0,
        started_at=T0,
        wake_at=T0 + timedelta(days=3),
        waiting_for="timer",
        end_status=None,
        paused_status=InstanceStatus.WAITING,
        held_by="tok",
        lease_expires_at=T0,
        task_since=T0,
        suggestion={"outcome": "yes"},
        retries=2,
        revision=7,
        enrol_key="tpl:c1",
    )
    bare = WorkflowInstance(
        id="i2",
        tenant="t",
        contact_id="c2",
        template_id="tpl",
        template_version="1.2",
        start_node="call",
        status=InstanceStatus.COMPLETED,
        nodes={},
        created_at=T0,
        updated_at=T0,
        enrol_key="tpl:c2",
    )
    return [full, bare]


def test_contact_rows_hold_what_the_dump_held() -> None:
    for contact in _contacts():
        dumped: dict[str, Any] = contact.model_dump(exclude={"workflow_instance_ids"})
        values = rows.contact_values(contact)
        assert set(values) == set(dumped) | {"phone_digits", "name_key"}
        assert {k: v for k, v in values.items() if k in dumped and k != "opted_out"} == {
            k: v for k, v in dumped.items() if k != "opted_out"
        }
    assert rows.contact_values(_contacts()[0])["opted_out"] == {
        "sms": T0.isoformat(),
        "email": "2026-10-01T13:00:00+00:00",
    }
    assert rows.contact_values(_contacts()[1])["opted_out"] is None


def test_instance_rows_hold_what_the_dump_held() -> None:
    for instance in _instances():
        dumped: dict[str, Any] = instance.model_dump(exclude={"nodes", "timeline", "start_node"}, mode="python")
        values = rows.instance_values(instance)
        assert set(values) == set(dumped) | {"enrol_key", "task_action", "worker_id", "worker_lease_until"}
        assert {k: v for k, v in values.items() if k in dumped} == dumped
    full, bare = (rows.instance_values(one) for one in _instances())
    assert full["enrol_key"] == "tpl:c1"
    assert bare["enrol_key"] is None  # finished: the key is free again
