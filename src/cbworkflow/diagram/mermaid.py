"""The graph as Mermaid flowchart text, for pasting into a Markdown page or an issue.

Mermaid reads its own syntax out of labels, so every character of a label that could mean something to it (quotes,
brackets, pipes, `#`, `<`, `>`, backticks) is written as Mermaid's numeric entity `#NN;`. Node ids are our own
(`n0`, `n1`…), since a template's node ids may hold anything.
"""

from __future__ import annotations

import json

from .graph import MISSING, Graph

_SPECIAL = set('"#&<>|`[](){}\\;')

# node kind -> (opening, closing) of its Mermaid shape
SHAPES = {
    "action": ("(", ")"),  # rounded
    "decision": ("{{", "}}"),  # hexagon
    "wait": ("[", "]"),
    "webhook": ("[/", "/]"),  # parallelogram
    "end": ("([", "])"),  # stadium
    MISSING: ("[", "]"),
}

CLASSES = {
    "action": "fill:#dbeafe,stroke:#2563eb",
    "decision": "fill:#fef3c7,stroke:#d97706",
    "wait": "fill:#ede9fe,stroke:#7c3aed,stroke-dasharray:6 4",
    "webhook": "fill:#ccfbf1,stroke:#0d9488",
    "success": "fill:#dcfce7,stroke:#16a34a",
    "failed": "fill:#fee2e2,stroke:#dc2626",
    "other": "fill:#f3f4f6,stroke:#6b7280",
    "current": "stroke-width:4px",
    "faded": "opacity:0.4",
}


def label(text: str) -> str:
    """`text` as a quoted Mermaid label: one line, every special character an entity."""
    flat = " ".join(text.split())
    return '"' + "".join(f"#{ord(ch)};" if ch in _SPECIAL else ch for ch in flat) + '"'


def render_mermaid(graph: Graph, title: str) -> str:
    ids = {node_id: f"n{n}" for n, node_id in enumerate(graph.boxes)}
    lines = ["---", f"title: {json.dumps(' '.join(title.split()))}", "---", "flowchart TD"]  # YAML reads JSON strings
    on_path = set(graph.highlight.path) if graph.highlight else set()
    for node_id, box in graph.boxes.items():
        opening, closing = SHAPES[box.kind]
        text = f"{box.title} · {box.detail}"
        count = graph.counts.get(node_id)
        if count is not None:
            text += f" · {count:,} here"
        lines.append(f"    {ids[node_id]}{opening}{label(text)}{closing}")
    if graph.start:
        lines.append(f"    start((start)) --> {ids[graph.start]}")
    walked = graph.walked()
    walked_links = []
    for n, edge in enumerate(graph.edges):
        arrow = "-.->" if edge.source == edge.target else "-->"
        lines.append(f"    {ids[edge.source]} {arrow}|{label(', '.join(edge.outcomes))}| {ids[edge.target]}")
        if (edge.source, edge.target) in walked:
            walked_links.append(str(n + (1 if graph.start else 0)))
    for name, style in CLASSES.items():
        lines.append(f"    classDef {name} {style}")
    for node_id, box in graph.boxes.items():
        lines.append(f"    class {ids[node_id]} {box.tone}")
    if graph.highlight:
        for node_id in graph.boxes:
            if node_id not in on_path:
                lines.append(f"    class {ids[node_id]} faded")
        if graph.highlight.current in ids:
            lines.append(f"    class {ids[graph.highlight.current]} current")
        if walked_links:
            lines.append(f"    linkStyle {','.join(walked_links)} stroke-width:3px")
    return "\n".join(lines) + "\n"
