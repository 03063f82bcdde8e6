"""The graph as a standalone SVG picture: shapes and colours by node type, outcomes on the edges, end statuses,
counts, a highlighted path.

Every piece of text the template supplies (names, ids, outcomes) is escaped as XML character data or attribute
values, so a name such as `<script>` shows as text; the picture links nothing outside itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from xml.sax.saxutils import escape, quoteattr

from .graph import MISSING, Box, Graph
from .layout import Placed, Route, lay_out

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
CHAR_WIDTH = 7.0  # a 13 px character, about, for wrapping and label backgrounds
TITLE_CHARS = 26
INK = "#1f2937"
MUTED = "#6b7280"

# tone -> (fill, stroke)
COLOURS = {
    "action": ("#dbeafe", "#2563eb"),
    "decision": ("#fef3c7", "#d97706"),
    "wait": ("#ede9fe", "#7c3aed"),
    "webhook": ("#ccfbf1", "#0d9488"),
    "success": ("#dcfce7", "#16a34a"),
    "failed": ("#fee2e2", "#dc2626"),
    "other": ("#f3f4f6", "#6b7280"),
}


def render_svg(graph: Graph, title: str) -> str:
    order = list(graph.boxes)
    layout = lay_out(order, graph.edges, graph.start)
    top = 28.0 if graph.start else 0.0  # room for the start marker
    width, height = layout.width, layout.height + top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 {-top:.0f} {width:.0f} {height:.0f}" role="img" font-family={quoteattr(FONT)} font-size="13">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{MUTED}"/></marker>'
        '<marker id="arrow-walked" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>',
        f'<rect x="0" y="{-top:.0f}" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    walked = graph.walked()
    on_path = set(graph.highlight.path) if graph.highlight else set()
    for route in layout.routes:
        parts.extend(_edge(route, (route.edge.source, route.edge.target) in walked, faded=bool(on_path)))
    taken: list[Area] = [_area(at) for at in layout.nodes.values()]
    for route in layout.routes:  # over every line, so no line crosses a label
        parts.extend(_label(route, taken, (route.edge.source, route.edge.target) in walked, faded=bool(on_path)))
    if graph.start:
        parts.extend(_start_marker(layout.nodes[graph.start]))
    for node_id, box in graph.boxes.items():
        faded = bool(on_path) and node_id not in on_path
        current = graph.highlight is not None and graph.highlight.current == node_id
        parts.extend(_node(box, layout.nodes[node_id], graph.counts.get(node_id), faded=faded, current=current))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _node(box: Box, at: Placed, count: int | None, *, faded: bool, current: bool) -> Iterator[str]:
    fill, stroke = COLOURS.get(box.tone, COLOURS["other"])
    opacity = ' opacity="0.4"' if faded else ""
    yield f'<g class="node node-{box.kind}" data-node={quoteattr(box.id)}{opacity}>'
    yield f"<title>{escape(box.title)} ({escape(box.id)})</title>"
    width = 4 if current else 2 if box.kind == MISSING else 1.5
    dash = ' stroke-dasharray="6 4"' if box.kind in ("wait", MISSING) else ""
    yield f'<{_shape(box.kind, at)} fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>'
    lines = _wrap(box.title)
    first = at.y - 8 - 8 * (len(lines) - 1)
    for n, line in enumerate(lines):
        yield (
            f'<text x="{at.x:.1f}" y="{first + 16 * n:.1f}" text-anchor="middle" fill="{INK}" font-weight="600">'
            f"{escape(line)}</text>"
        )
    detail = _cut(box.detail, TITLE_CHARS + 2)
    yield (
        f'<text x="{at.x:.1f}" y="{at.y + 22:.1f}" text-anchor="middle" fill="{MUTED}" font-size="11">'
        f"{escape(detail)}</text>"
    )
    if count is not None:
        label = f"{count:,}"
        badge = max(24.0, len(label) * CHAR_WIDTH + 12)
        x, y = at.x + at.width / 2 - badge / 2, at.y - at.height / 2
        yield (
            f'<rect class="count" x="{x - badge / 2:.1f}" y="{y - 11:.1f}" width="{badge:.1f}" height="22" rx="11" '
            f'fill="{INK}"/><text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" fill="#ffffff" font-size="11" '
            f'font-weight="700">{escape(label)}</text>'
        )
    yield "</g>"


def _shape(kind: str, at: Placed) -> str:
    left, right = at.x - at.width / 2, at.x + at.width / 2
    top, bottom = at.y - at.height / 2, at.y + at.height / 2
    if kind == "decision":  # a hexagon pointed left and right: a branch
        points = [(left, at.y), (left + 16, top), (right - 16, top), (right, at.y), (right - 16, bottom),
                  (left + 16, bottom)]  # fmt: skip
        return "polygon points=" + quoteattr(" ".join(f"{x:.1f},{y:.1f}" for x, y in points))
    if kind == "webhook":  # a parallelogram: data going out
        points = [(left + 12, top), (right, top), (right - 12, bottom), (left, bottom)]
        return "polygon points=" + quoteattr(" ".join(f"{x:.1f},{y:.1f}" for x, y in points))
    radius = at.height / 2 if kind == "end" else 10 if kind == "action" else 2
    return f'rect x="{left:.1f}" y="{top:.1f}" width="{at.width:.1f}" height="{at.height:.1f}" rx="{radius:.1f}"'


def _edge(route: Route, walked: bool, *, faded: bool) -> Iterator[str]:
    colour, marker = (INK, "arrow-walked") if walked else (MUTED, "arrow")
    opacity = ' opacity="0.35"' if faded and not walked else ""
    dash = ' stroke-dasharray="5 4"' if route.backward else ""
    label = ", ".join(route.edge.outcomes)
    yield f'<g class="edge" data-from={quoteattr(route.edge.source)} data-to={quoteattr(route.edge.target)}{opacity}>'
    yield f"<title>{escape(label)}</title>"
    yield (
        f'<path d="{_path(route)}" fill="none" stroke="{colour}" stroke-width="{2.5 if walked else 1.3}"{dash} '
        f'marker-end="url(#{marker})"/>'
    )
    yield "</g>"


Area = tuple[float, float, float, float]  # left, top, right, bottom


def _area(at: Placed) -> Area:
    return (at.x - at.width / 2, at.y - at.height / 2, at.x + at.width / 2, at.y + at.height / 2)


def _overlaps(a: Area, b: Area) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(route: Route, taken: list[Area], walked: bool, *, faded: bool) -> Iterator[str]:
    """The outcomes on the line: at the first place along it where the label covers no box and no other label."""
    colour = INK if walked else MUTED
    opacity = ' opacity="0.35"' if faded and not walked else ""
    text = _cut(", ".join(route.edge.outcomes), 30)
    half = len(text) * CHAR_WIDTH * 0.85 / 2 + 4
    candidates = [_point_along(route, share) for share in (0.5, 0.35, 0.65, 0.2, 0.8)]
    area = (0.0, 0.0, 0.0, 0.0)
    for x, y in candidates:
        area = (x - half, y - 9, x + half, y + 7)
        if not any(_overlaps(area, other) for other in taken):
            break
    else:
        x, y = candidates[0]
        area = (x - half, y - 9, x + half, y + 7)
    taken.append(area)
    yield f'<g class="label"{opacity}>'
    yield f'<rect x="{x - half:.1f}" y="{y - 9:.1f}" width="{2 * half:.1f}" height="16" rx="3" fill="#ffffff"/>'
    yield f'<text x="{x:.1f}" y="{y + 3:.1f}" text-anchor="middle" fill="{colour}" font-size="11">{escape(text)}</text>'
    yield "</g>"


def _path(route: Route) -> str:
    """Smooth curves through the route's points, leaving and entering each point vertically; a line that
    closes a loop bows out to the right so it does not lie on the line it returns along."""
    points = route.points
    if len(points) == 4 and not route.backward and route.edge.source == route.edge.target:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
        return f"M{x0:.1f},{y0:.1f} C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} {x3:.1f},{y3:.1f}"
    bow = 60.0 if route.backward else 0.0
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        mid = (y0 + y1) / 2
        d += f" C{x0 + bow:.1f},{mid:.1f} {x1 + bow:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
    return d


def _point_along(route: Route, share: float) -> tuple[float, float]:
    """The point `share` of the way along the line's first stretch (the curve `_path` draws)."""
    (x0, y0), (x1, y1) = route.points[0], route.points[1]
    if route.edge.source == route.edge.target:
        return x1 + 8, (y0 + route.points[-1][1]) / 2
    bow = 60.0 if route.backward else 0.0
    mid = (y0 + y1) / 2
    controls = ((x0, y0), (x0 + bow, mid), (x1 + bow, mid), (x1, y1))
    weights = ((1 - share) ** 3, 3 * (1 - share) ** 2 * share, 3 * (1 - share) * share**2, share**3)
    return (
        sum(w * c[0] for w, c in zip(weights, controls, strict=True)),
        sum(w * c[1] for w, c in zip(weights, controls, strict=True)),
    )


def _start_marker(at: Placed) -> Iterator[str]:
    top = at.y - at.height / 2
    yield '<g class="start">'
    yield f'<text x="{at.x:.1f}" y="{top - 30:.1f}" text-anchor="middle" fill="{MUTED}" font-size="11">start</text>'
    yield (
        f'<path d="M{at.x:.1f},{top - 24:.1f} L{at.x:.1f},{top - 2:.1f}" stroke="{INK}" stroke-width="1.5" '
        'marker-end="url(#arrow-walked)"/>'
    )
    yield "</g>"


def _wrap(text: str) -> list[str]:
    """At most two lines of about `TITLE_CHARS`, broken at spaces where it can; the rest cut with an ellipsis."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > TITLE_CHARS:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    lines = [_cut(one, TITLE_CHARS) for one in lines]
    if len(lines) > 2:
        lines = [lines[0], _cut(lines[1] + " " + lines[2], TITLE_CHARS)]
    return lines


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"
