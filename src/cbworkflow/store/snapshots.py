"""Frozen copies of templates' graphs: a snapshot, shared by every instance created from that exact graph, and the
cache of parsed node maps that every backend keeps (snapshots never change, so entries never go stale)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from ..models.templates import Node

_NODE_MAP: TypeAdapter[dict[str, Node]] = TypeAdapter(dict[str, Node])  # a snapshot's stored nodes, read back


@dataclass
class Snapshot:
    """A frozen copy of a template's graph, shared by every instance created from that exact graph."""

    id: str
    start_node: str
    nodes: dict[str, Any] = field(default_factory=dict)


class SnapshotCache:
    """Parsed frozen node maps by snapshot id. Snapshots never change, so entries never go stale."""

    def __init__(self, size: int = 128) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[str, dict[str, Node]]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[str, dict[str, Node]] | None:
        """`key` is (tenant, snapshot id)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: tuple[str, dict[str, Node]]) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def load(self, tenant: str, snapshot_id: str, read: Callable[[], tuple[str, Any]]) -> tuple[str, dict[str, Node]]:
        """The start node and parsed nodes of a snapshot; `read` gives them as stored, called only on a miss."""
        key = (tenant, snapshot_id)
        found = self.get(key)
        if found is None:
            start_node, nodes = read()
            found = (start_node, _NODE_MAP.validate_python(nodes))
            self.put(key, found)
        return found
