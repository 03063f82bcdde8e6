"""Where each node of a template's graph goes: a layered drawing, top to bottom, in pure Python.

The classic steps (Sugiyama): turn the edges that close a loop around so the graph has no cycle, put each node one
layer below the lowest node that leads to it, stand in for edges that skip layers with invisible points so lines
route between boxes, order each layer to cross few lines (barycentre sweeps), then place nodes left to right as
close as the order allows to the nodes they link to. Every step is linear or near it in nodes and edges, and the
invisible points are capped, so the 2,000 nodes a template may hold lay out at once.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NODE_WIDTH = 200.0
NODE_HEIGHT = 64.0
POINT_WIDTH = 24.0  # the room an invisible point takes in its layer
GAP_X = 36.0
GAP_Y = 72.0
MARGIN = 32.0
MAX_POINTS = 20_000  # past this, edges that skip layers are drawn straight instead of routed
SWEEPS = 6


@dataclass(frozen=True)
class Edge:
    """One or more outcomes that lead from `source` to `target` (labels joined: `no_answer, voicemail`)."""

    source: str
    target: str
    outcomes: tuple[str, ...]


@dataclass
class Placed:
    """A node's box: its centre, size and layer."""

    x: float
    y: float
    width: float
    height: float
    layer: int


@dataclass
class Route:
    """An edge's line: the points it passes through, from the source's side to the target's."""

    edge: Edge
    points: list[tuple[float, float]]
    backward: bool  # it closes a loop: drawn from the source's top up to the target's bottom


@dataclass
class Layout:
    nodes: dict[str, Placed] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


def edges_of(transitions: Mapping[str, Mapping[str, str]]) -> list[Edge]:
    """The graph's edges: one per (source, target) pair, its outcomes in the template's order."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for source, outgoing in transitions.items():
        for outcome, target in outgoing.items():
            grouped.setdefault((source, target), []).append(outcome)
    return [Edge(source, target, tuple(outcomes)) for (source, target), outcomes in grouped.items()]


def lay_out(order: Sequence[str], edges: Sequence[Edge], start: str | None) -> Layout:
    """Boxes for `order` (every node, the template's order) and lines for `edges` (whose ends are all in it)."""
    backward = _loop_closing(order, edges, start)
    forward = [(e.target, e.source) if e in backward else (e.source, e.target) for e in edges if e.source != e.target]
    layer = _layers(order, forward)
    rows, chains = _with_points(order, forward, layer)
    _reduce_crossings(rows, chains)
    placed = _place(rows, chains, layer)
    layout = Layout()
    for node in order:
        layout.nodes[node] = placed[node]
    layout.routes = [_route(edge, edge in backward, placed, chains) for edge in edges]
    layout.width = max((p.x + p.width / 2 for p in placed.values()), default=0.0) + MARGIN
    layout.height = max((p.y + p.height / 2 for p in placed.values()), default=0.0) + MARGIN
    return layout


def _loop_closing(order: Sequence[str], edges: Sequence[Edge], start: str | None) -> set[Edge]:
    """The edges that lead back to a node still being walked, walking depth first from the start node first."""
    outgoing: dict[str, list[Edge]] = defaultdict(list)
    for edge in edges:
        outgoing[edge.source].append(edge)
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    closing: set[Edge] = set()
    roots = ([start] if start in set(order) else []) + list(order)
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(outgoing[root]))]
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            seen = state.get(step.target)
            if seen == 1:
                closing.add(step)
            elif seen is None:
                state[step.target] = 1
                stack.append((step.target, iter(outgoing[step.target])))
    return closing


def _layers(order: Sequence[str], forward: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Longest path from a node with nothing leading to it (Kahn's order: the graph has no cycle now)."""
    incoming = dict.fromkeys(order, 0)
    outgoing: dict[str, list[str]] = defaultdict(list)
    for source, target in forward:
        outgoing[source].append(target)
        incoming[target] += 1
    layer = dict.fromkeys(order, 0)
    ready = [node for node in order if incoming[node] == 0]
    while ready:
        node = ready.pop()
        for target in outgoing[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return layer


Chains = dict[tuple[str, str], list[str]]  # a forward edge's (upper, lower) ends -> the points between, top down


def _with_points(
    order: Sequence[str], forward: Sequence[tuple[str, str]], layer: Mapping[str, int]
) -> tuple[list[list[str]], Chains]:
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for node in order:
        rows[layer[node]].append(node)
    chains: Chains = {}
    budget = MAX_POINTS
    for upper, lower in dict.fromkeys(forward):
        span = layer[lower] - layer[upper]
        points: list[str] = []
        if 1 < span <= budget + 1:
            budget -= span - 1
            points = [f"\x00{upper}\x00{lower}\x00{i}" for i in range(1, span)]  # no node id holds a NUL
            for i, point in enumerate(points, start=layer[upper] + 1):
                rows[i].append(point)
        chains[(upper, lower)] = points
    return rows, chains


def _links(chains: Chains) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each node's and point's neighbours one layer up and one layer down."""
    up: dict[str, list[str]] = defaultdict(list)
    down: dict[str, list[str]] = defaultdict(list)
    for (upper, lower), points in chains.items():
        path = [upper, *points, lower]
        for a, b in itertools.pairwise(path):
            down[a].append(b)
            up[b].append(a)
    return up, down


def _reduce_crossings(rows: list[list[str]], chains: Chains) -> None:
    """Barycentre sweeps, down then up: each node moves to the mean position of its neighbours in the layer just
    swept; ties keep their order (a stable sort), and a node with no neighbour there keeps its relative place."""
    up, down = _links(chains)
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        indices = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
        for i in indices:
            fixed = rows[i - 1] if downward else rows[i + 1]
            rows[i] = _by_barycentre(rows[i], {node: n for n, node in enumerate(fixed)}, up if downward else down)


def _by_barycentre(row: list[str], where: Mapping[str, int], neighbours: Mapping[str, list[str]]) -> list[str]:
    scale = len(where) / max(len(row), 1)

    def centre(pair: tuple[int, str]) -> float:
        position, node = pair
        linked = [where[other] for other in neighbours.get(node, ()) if other in where]
        return sum(linked) / len(linked) if linked else position * scale

    return [node for _, node in sorted(enumerate(row), key=centre)]


def _place(rows: list[list[str]], chains: Chains, layer: Mapping[str, int]) -> dict[str, Placed]:
    """Left to right in each layer's order, each pulled towards the mean of what links to it above, never
    closer to its left neighbour than the gap; then the whole drawing shifted to start at the margin."""
    up, _ = _links(chains)
    xs: dict[str, float] = {}
    widths = {node: POINT_WIDTH if node.startswith("\x00") else NODE_WIDTH for row in rows for node in row}
    for row in rows:
        wanted = []
        for n, node in enumerate(row):
            above = [xs[other] for other in up[node] if other in xs]
            wanted.append(sum(above) / len(above) if above else n * (NODE_WIDTH + GAP_X))
        right_edge = float("-inf")
        for node, x in zip(row, wanted, strict=True):
            x = max(x, right_edge + GAP_X + widths[node] / 2)
            xs[node] = x
            right_edge = x + widths[node] / 2
    left = min((xs[node] - widths[node] / 2 for node in xs), default=0.0)
    placed = {}
    for i, row in enumerate(rows):
        y = MARGIN + NODE_HEIGHT / 2 + i * (NODE_HEIGHT + GAP_Y)
        for node in row:
            placed[node] = Placed(xs[node] - left + MARGIN, y, widths[node], NODE_HEIGHT, i)
    for node, at in layer.items():
        placed[node].layer = at
    return placed


def _route(edge: Edge, backward: bool, placed: Mapping[str, Placed], chains: Chains) -> Route:
    source, target = placed[edge.source], placed[edge.target]
    if edge.source == edge.target:  # a node that leads to itself: a loop on its right side
        x, y = source.x + source.width / 2, source.y
        return Route(edge, [(x, y - 12), (x + 40, y - 24), (x + 40, y + 24), (x, y + 12)], backward=False)
    upper, lower = (edge.target, edge.source) if backward else (edge.source, edge.target)
    middle = [(placed[p].x, placed[p].y) for p in chains.get((upper, lower), [])]
    if backward:
        start = (source.x, source.y - source.height / 2)
        end = (target.x, target.y + target.height / 2)
        return Route(edge, [start, *reversed(middle), end], backward=True)
    start = (source.x, source.y + source.height / 2)
    end = (target.x, target.y - target.height / 2)
    return Route(edge, [start, *middle, end], backward=False)
