"""What a drawing shows of a template, whatever its format: each node's kind, label and colour, the edges, the start,
and optionally how many instances sit at each node and one instance's path."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..models.templates import ActionNode, DecisionNode, EndNode, Node, SplitNode, WaitNode, WebhookNode
from .layout import Edge, edges_of

MISSING = "missing"  # the kind of a node a transition names but the template lacks (a draft's mistake)


@dataclass(frozen=True)
class Box:
    """One node as drawn: `kind` picks the shape (the node type, or `missing`), `tone` the colour."""

    id: str
    kind: str
    title: str
    detail: str
    tone: str


@dataclass(frozen=True)
class Highlight:
    """What to stress: the nodes an instance went through (oldest first) and where it is now."""

    path: Sequence[str] = ()
    current: str | None = None


@dataclass
class Graph:
    boxes: dict[str, Box]
    edges: list[Edge]
    start: str | None
    counts: Mapping[str, int] = field(default_factory=dict)
    highlight: Highlight | None = None

    def walked(self) -> set[tuple[str, str]]:
        """The (source, target) pairs the highlighted instance went along."""
        path = list(self.highlight.path) if self.highlight else []
        return set(itertools.pairwise(path))


def graph_of(
    nodes: Mapping[str, Node],
    start: str | None,
    counts: Mapping[str, int] | None = None,
    highlight: Highlight | None = None,
) -> Graph:
    boxes = {node_id: _box(node_id, node) for node_id, node in nodes.items()}
    for node in nodes.values():
        for target in node.transitions.values():
            if target not in boxes:
                boxes[target] = Box(target, MISSING, target, "no such node", "failed")
    edges = edges_of({node_id: node.transitions for node_id, node in nodes.items()})
    return Graph(boxes, edges, start if start in boxes else None, dict(counts or {}), highlight)


def _box(node_id: str, node: Node) -> Box:
    title = (node.name or "").strip() or node_id
    if isinstance(node, ActionNode):
        return Box(node_id, "action", title, node.action or "no action set", "action")
    if isinstance(node, DecisionNode):
        kind = (node.rule or {}).get("type")
        detail = {"heuristic": "rule", "ai": "AI decision", "manual": "a person decides"}.get(str(kind), "no rule set")
        return Box(node_id, "decision", title, detail, "decision")
    if isinstance(node, WaitNode):
        return Box(node_id, "wait", title, _wait_detail(node.wait_condition or {}), "wait")
    if isinstance(node, WebhookNode):
        return Box(node_id, "webhook", title, f"webhook {node.webhook_method.upper()}", "webhook")
    if isinstance(node, SplitNode):
        shares = "/".join(str(node.weights[outcome]) for outcome in sorted(node.weights)) or "no weights"
        return Box(node_id, "decision", title, f"split {shares}", "decision")
    assert isinstance(node, EndNode)
    tone = node.end_status if node.end_status in ("success", "failed") else "other"
    return Box(node_id, "end", title, f"ends: {node.end_status}", tone)


def _wait_detail(condition: Mapping[str, object]) -> str:
    kind = condition.get("type")
    if kind == "duration":
        return f"wait {condition.get('duration')}"
    if kind == "until":
        return f"wait until {condition.get('until')}"
    if kind == "event":
        return f"wait for {condition.get('event')}"
    return "no condition set"
