"""Pictures of templates: the SVG is well-formed XML that names every node and outcome and escapes what authors
wrote; the layout copes with loops, self-loops, missing targets and the largest template; Mermaid text escapes
its own syntax."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.diagram import Highlight, graph_of, render_mermaid, render_svg
from cbworkflow.diagram.layout import edges_of, lay_out
from cbworkflow.models.templates import TemplateCreate

REFERENCE = Path(__file__).parents[2] / "src/cbworkflow/examples/county-outreach-v1.json"
SVG = "{http://www.w3.org/2000/svg}"


def template(data: dict[str, Any]) -> TemplateCreate:
    return TemplateCreate.model_validate(data)


def reference() -> TemplateCreate:
    return template(json.loads(REFERENCE.read_text()))


def svg_of(body: TemplateCreate, **kwargs: Any) -> ET.Element:
    return ET.fromstring(render_svg(graph_of(body.nodes, body.start_node, **kwargs), body.name or "t"))


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{SVG}text")]


def test_the_reference_template_shows_every_node_and_outcome() -> None:
    body = reference()
    root = svg_of(body)
    shown = " ".join(texts(root))
    for node_id, node in body.nodes.items():
        assert (node.name or node_id)[:20] in shown, node_id
        for outcome in node.transitions:
            assert outcome in shown, outcome
    drawn = {el.get("data-node") for el in root.iter(f"{SVG}g") if el.get("class", "").startswith("node ")}
    assert drawn == set(body.nodes)
    assert "start" in texts(root)


def test_boxes_do_not_overlap_and_fit_the_picture() -> None:
    body = reference()
    order = list(body.nodes)
    layout = lay_out(order, edges_of({k: v.transitions for k, v in body.nodes.items()}), body.start_node)
    boxes = list(layout.nodes.values())
    for n, a in enumerate(boxes):
        assert 0 <= a.x - a.width / 2
        assert a.x + a.width / 2 <= layout.width
        for b in boxes[n + 1 :]:
            apart_x = abs(a.x - b.x) >= (a.width + b.width) / 2
            apart_y = abs(a.y - b.y) >= (a.height + b.height) / 2
            assert apart_x or apart_y


def test_the_start_node_is_on_the_top_layer_and_edges_mostly_go_down() -> None:
    body = reference()
    layout = lay_out(list(body.nodes), edges_of({k: v.transitions for k, v in body.nodes.items()}), body.start_node)
    assert layout.nodes[body.start_node or ""].layer == 0
    assert all(not route.backward for route in layout.routes)  # the reference has no loop


def test_author_text_is_escaped() -> None:
    nasty = '<script>alert("x")</script> & ]]>'
    body = template(
        {
            "name": nasty,
            "start_node": "a",
            "nodes": {
                "a": {"type": "action", "name": nasty, "action": "phone_call", "transitions": {"<b>": "z"}},
                "z": {"type": "end", "name": "done", "end_status": "success"},
            },
        }
    )
    raw = render_svg(graph_of(body.nodes, body.start_node), body.name or "")
    assert "<script>" not in raw
    assert "<b>" not in raw
    root = ET.fromstring(raw)  # still well-formed
    assert any(nasty[:20] in t for t in texts(root))
    assert "<b>" in texts(root)


def test_loops_self_loops_and_missing_targets_are_drawn() -> None:
    body = template(
        {
            "name": "loops",
            "start_node": "call",
            "nodes": {
                "call": {"type": "action", "action": "phone_call", "transitions": {"retry": "call", "next": "wait"}},
                "wait": {"type": "wait", "wait_condition": {"type": "duration", "duration": "P1D"},
                         "transitions": {"elapsed": "call", "odd": "nowhere"}},
            },
        }
    )  # fmt: skip
    root = svg_of(body)
    drawn = {el.get("data-node") for el in root.iter(f"{SVG}g") if el.get("class", "").startswith("node ")}
    assert drawn == {"call", "wait", "nowhere"}
    assert "no such node" in texts(root)
    layout = lay_out(["call", "wait", "nowhere"], edges_of({k: v.transitions for k, v in body.nodes.items()}), "call")
    assert any(route.backward for route in layout.routes)  # wait -> call closes the loop
    edges = [el for el in root.iter(f"{SVG}g") if el.get("class") == "edge"]
    assert {(e.get("data-from"), e.get("data-to")) for e in edges} == {
        ("call", "call"),
        ("call", "wait"),
        ("wait", "call"),
        ("wait", "nowhere"),
    }


def test_counts_and_a_highlighted_path() -> None:
    body = reference()
    path = ["initial_call", "schedule_door", "door_decision"]
    root = svg_of(body, counts={"initial_call": 1203}, highlight=Highlight(path=path, current="door_decision"))
    assert "1,203" in texts(root)
    faded = {el.get("data-node") for el in root.iter(f"{SVG}g") if el.get("opacity") and el.get("data-node")}
    assert faded == set(body.nodes) - set(path)
    walked = [el for el in root.iter(f"{SVG}path") if el.get("stroke-width") == "2.5"]
    assert len(walked) == 2


def test_the_largest_template_lays_out() -> None:
    count = 2000
    nodes: dict[str, Any] = {
        f"n{i}": {
            "type": "action",
            "action": "phone_call",
            "transitions": {"a": f"n{i + 1}", "b": f"n{(i * 7) % count}"},
        }
        for i in range(count - 1)
    }
    nodes[f"n{count - 1}"] = {"type": "end", "end_status": "success"}
    body = template({"name": "big", "start_node": "n0", "nodes": nodes})
    root = svg_of(body)
    assert len([el for el in root.iter(f"{SVG}g") if el.get("class", "").startswith("node ")]) == count


def test_mermaid_escapes_its_syntax_and_uses_its_own_ids() -> None:
    body = template(
        {
            "name": 'Say "hi"',
            "start_node": "a-1",
            "nodes": {
                "a-1": {"type": "action", "name": 'Call [now] | "quick" #1', "action": "phone_call",
                        "transitions": {"x|y": "end"}},
                "end": {"type": "end", "end_status": "success"},
            },
        }
    )  # fmt: skip
    text = render_mermaid(graph_of(body.nodes, body.start_node), body.name or "")
    assert text.splitlines()[1] == 'title: "Say \\"hi\\""'
    assert "n0(" in text
    assert "a-1" not in text.split("---")[2].split("(")[0]
    label_lines = [line for line in text.splitlines() if line.strip().startswith("n0(")]
    (node_line,) = label_lines
    inner = node_line.split('"')[1]
    assert not re.search(r'[\[\]|"]', inner)
    assert "#91;now#93;" in inner
    assert '-->|"x#124;y"| n1' in text


@pytest.mark.parametrize("start", [None, "missing"])
def test_a_draft_without_a_valid_start_still_draws(start: str | None) -> None:
    body = template({"name": "draft", "nodes": {"a": {"type": "end", "end_status": "success"}}})
    root = ET.fromstring(render_svg(graph_of(body.nodes, start), "draft"))
    assert "start" not in texts(root)
