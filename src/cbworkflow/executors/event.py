"""The built-in `event` executor, for `"action": "emit_event"`: one workflow telling another that something happened.

It is always automatic, whatever `CBW_EXECUTORS` says, and does no I/O: the worker runs it inside the transaction
that applies its step. The instance leaves the node with outcome `sent`, then the custom event of its
`action_config` (`{"event", "data"?, "to"?}`, rendered with placeholders) is raised exactly as `POST /api/events`
would raise it (`services/custom_events.py`): for the instance's contact (`to: "contact"`, the default: its waiting
instances, its templates' triggers and goals) or for the whole tenant (`to: "tenant"`: every waiting instance).
The step and what the event does commit together or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..engine import steps
from ..models.events import SYSTEM_ACTOR
from ..models.instances import InstanceStatus, WorkflowInstance
from ..models.templates import EmitEventConfig
from ..services.custom_events import Raised, raise_event
from ..services.triggers import Reactions
from ..store.base import Tx


def emit_step(
    tx: Tx,
    reactions: Reactions,
    instance: WorkflowInstance,
    config: Any,
    details: dict[str, Any],
    now: datetime,
    ctx: steps.Context,
) -> Raised:
    """Apply the `emit_event` node the instance is at, in `tx`: its step (outcome `sent`), then the event."""
    try:
        parsed = EmitEventConfig.model_validate(config)
    except ValidationError as exc:
        error = f"the emit_event action_config is not valid: {exc.errors()[0]['msg']}"
        made = steps.action_finished(instance, None, {**details, "error": error}, now, ctx)
        tx.update_instance(made.instance)
        tx.append_events(made.events)
        return Raised()
    data = {**details, "event": parsed.event, "to": parsed.to}
    made = steps.action_finished(instance, "sent", data, now, ctx)
    tx.update_instance(made.instance)
    tx.append_events(made.events)
    if made.instance.status is InstanceStatus.FAILED:  # the node has no `sent` outcome: nothing is raised
        return Raised()
    contact_id = instance.contact_id if parsed.to == "contact" else None
    if contact_id is not None and tx.read_contact(contact_id) is None:
        return Raised()  # the contact is gone: there is no one to raise it for
    return raise_event(
        tx, reactions, name=parsed.event, data=parsed.data, now=now, actor=SYSTEM_ACTOR, contact_id=contact_id
    )
