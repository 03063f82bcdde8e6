"""`GET /api/workflows/{id}/diagram`: the drawing of a template, with its counts or one instance's path.

With an instance, the drawing is of the graph that instance runs on (the version it froze), so its path always
lies on the nodes drawn. The path is read from the instance's `node_entered` events, at most `PATH_EVENTS` of them.
"""

from __future__ import annotations

from ..diagram import Highlight, graph_of, render_mermaid, render_svg
from ..errors import NotFound
from ..models.access import Principal
from ..models.events import EventType
from ..models.instances import InstanceStatus
from ..models.templates import EndNode, Node
from ..store.base import PageRequest, Store, Tx
from ..store.tallies import Count, Metric
from .instances import InstanceService
from .stats import FINISHED

PATH_EVENTS = 10_000
"""The most events read to draw an instance's path (a path longer than that shows its start)."""


def drawn_counts(nodes: dict[str, Node], counts: list[Count]) -> dict[str, int]:
    """How many instances are at each node now: unfinished ones, and at an end node those that completed there."""
    drawn = dict.fromkeys(nodes, 0)
    for count in counts:
        if count.metric != Metric.PLACED or not count.node:
            continue
        at_end = isinstance(nodes.get(count.node), EndNode)
        there = count.key == InstanceStatus.COMPLETED if at_end else count.key not in FINISHED
        if there:
            drawn[count.node] = drawn.get(count.node, 0) + count.n
    return drawn


def _path(tx: Tx, instance_id: str) -> list[str]:
    path: list[str] = []
    page = PageRequest(limit=500)
    read = 0
    while read < PATH_EVENTS:
        found = tx.instance_events(instance_id, page)
        path.extend(e.node_id for e in found.items if e.type is EventType.NODE_ENTERED and e.node_id)
        read += len(found.items)
        if found.next_cursor is None:
            break
        page = PageRequest(limit=500, cursor=found.next_cursor)
    return path


class DiagramService:
    def __init__(self, store: Store, instances: InstanceService) -> None:
        self.store = store
        self.instances = instances

    async def counts(self, tenant: str, template_id: str) -> dict[str, int]:
        """The numbers the drawing puts on each node of the template (`drawn_counts`), for a page to list beside
        it."""

        def read(tx: Tx) -> dict[str, int]:
            template = tx.get_template(template_id)
            if template is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            return drawn_counts(template.nodes, tx.workflow_counts(template_id, None))

        return await self.store.read(tenant, read)

    async def draw(
        self, principal: Principal, template_id: str, kind: str, *, stats: bool = False, instance_id: str | None = None
    ) -> str:
        def read(tx: Tx) -> tuple[str, dict[str, Node], str | None, dict[str, int], Highlight | None]:
            template = tx.get_template(template_id)
            if template is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            nodes, start, highlight = template.nodes, template.start_node, None
            if instance_id is not None:
                instance = self.instances.readable(principal, tx.get_instance(instance_id), instance_id)
                if instance.template_id != template_id:
                    raise NotFound(f"no instance with id {instance_id!r} of template {template_id!r}")
                nodes, start = instance.nodes, instance.start_node
                highlight = Highlight(_path(tx, instance_id), instance.current_node)
            counts = drawn_counts(nodes, tx.workflow_counts(template_id, None)) if stats else {}
            return template.name, nodes, start, counts, highlight

        title, nodes, start, counts, highlight = await self.store.read(principal.tenant, read)
        graph = graph_of(nodes, start, counts, highlight)
        return render_svg(graph, title) if kind == "svg" else render_mermaid(graph, title)
