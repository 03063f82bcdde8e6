"""Small templates several test modules run (the reference template is conftest's `reference_template`)."""

from __future__ import annotations

from typing import Any


def one_text(
    template_id: str = "one-text",
    *,
    message: str = "Hi {contact.name}",
    opted_out: bool = False,
    **template: Any,
) -> dict[str, Any]:
    """A text (`sms`) and its end, `texted`; with `opted_out`, the text's `opted_out` outcome ends `stopped`.
    `template` adds template fields (`contact_hours`, ...)."""
    transitions = {"sent": "done", **({"opted_out": "stopped"} if opted_out else {})}
    nodes: dict[str, Any] = {
        "text": {"type": "action", "action": "sms", "action_config": {"message": message}, "transitions": transitions},
        "done": {"type": "end", "end_status": "texted"},
    }
    if opted_out:
        nodes["stopped"] = {"type": "end", "end_status": "stopped"}
    return {"id": template_id, "name": template_id, "start_node": "text", "nodes": nodes, **template}


def ab_split(template_id: str = "ab") -> dict[str, Any]:
    """A 70/30 split between two ends, `got_a` and `got_b`."""
    return {
        "id": template_id,
        "name": "A/B",
        "start_node": "split",
        "nodes": {
            "split": {"type": "split", "weights": {"a": 70, "b": 30}, "transitions": {"a": "end_a", "b": "end_b"}},
            "end_a": {"type": "end", "end_status": "got_a"},
            "end_b": {"type": "end", "end_status": "got_b"},
        },
    }


def one_call(template_id: str = "calls") -> dict[str, Any]:
    """A phone call (a person's task) and its end."""
    return {
        "id": template_id,
        "name": "Calls",
        "start_node": "call",
        "nodes": {
            "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
            "end": {"type": "end"},
        },
    }


def one_timer(template_id: str = "timer") -> dict[str, Any]:
    """A one-minute wait, then the end: what tests of due timers enrol."""
    return {
        "id": template_id,
        "name": "Timer",
        "start_node": "hold",
        "nodes": {
            "hold": {
                "type": "wait",
                "wait_condition": {"type": "duration", "duration": "PT1M"},
                "transitions": {"elapsed": "done"},
            },
            "done": {"type": "end"},
        },
    }
