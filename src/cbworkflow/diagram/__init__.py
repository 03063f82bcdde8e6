"""Pictures of a template: a layered SVG drawing and Mermaid text, with counts and one instance's path.

Pure Python with no system package (no Graphviz): `layout` places the nodes, `graph` says what each shows,
`svg` and `mermaid` write the two formats.
"""

from __future__ import annotations

from .graph import Graph, Highlight, graph_of
from .mermaid import render_mermaid
from .svg import render_svg

FORMATS = ("svg", "mermaid")

__all__ = ["FORMATS", "Graph", "Highlight", "graph_of", "render_mermaid", "render_svg"]
