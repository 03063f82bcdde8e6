"""Placeholders: `{state.key}`, `{contact.metadata.key}`, `{instance.id}`... filled in by key lookup only.

Prompts, messages, webhook URLs, headers and bodies, and `until` times hold placeholders written by template
authors. Python's `str.format` would walk objects (`{state.__class__...}`) and honour format specs
(`{x:>1000000000}`), so this renderer does neither: a regex finds `{root.seg.seg...}` and each segment is a key
of a dict (or the index of a list, when it is digits). Nothing else is ever read, called or formatted.

- Roots: `state`, `contact`, `instance`, `template` (`ROOTS`), each a dict in the `data` the engine passes.
  Segments are `[A-Za-z0-9_-]+`; `{state.__class__}` is just a lookup of the key "__class__" (missing: empty).
- A missing key, a key of something that is not a dict, an index past the end and `null` render as "".
- Text renders as is; numbers as JSON writes them (`3`, `2.5`); booleans as `true`/`false`; dicts and lists as
  JSON (`{"a": 1}`), so a webhook body gets what a JSON reader expects. Dates and times as ISO 8601.
- Anything else in braces is not a placeholder and is left exactly as written: `{not a placeholder}`, `{0}`,
  `{contact.name!r}`, `{state.x:>10}`, `{ state.x }`, `{state}`. There is no escape: `{{state.x}}` renders
  `{` + the value + `}`.
- The output is cut at `MAX_RENDERED` characters (for `render_json`, all the strings of the value together):
  a placeholder holding a huge value, repeated, cannot grow a message or a body without bound. Cutting rather
  than failing keeps one oversized message from stopping the worker; the limit is far above any real message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Final

__all__ = ["MAX_RENDERED", "PLACEHOLDER", "ROOTS", "render", "render_json"]

MAX_RENDERED: Final = 100_000
MAX_JSON_DEPTH: Final = 64  # deeper bodies are returned as they are below this depth, unrendered
ROOTS: Final = ("state", "contact", "instance", "template")
PLACEHOLDER: Final = re.compile(r"\{(" + "|".join(ROOTS) + r")((?:\.[A-Za-z0-9_-]+)+)\}", re.ASCII)
_MISSING = object()


def _lookup(data: Mapping[str, Any], root: str, path: str) -> Any:
    value: Any = data.get(root, _MISSING)
    for segment in path[1:].split("."):
        if isinstance(value, Mapping):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list | tuple) and segment.isdigit() and len(segment) <= 9:
            index = int(segment)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
    return value


def _text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):  # a number too long to write, a cycle: nothing to show
        return ""


class _Budget:
    """Characters still allowed in the output, shared by every string of a `render_json` value."""

    def __init__(self, limit: int = MAX_RENDERED) -> None:
        self.left = limit
        self._filled: dict[tuple[str, str], str] = {}  # each placeholder is looked up and written out once

    def render(self, text: str, data: Mapping[str, Any]) -> str:
        if self.left <= 0:
            return ""
        parts: list[str] = []
        position = 0
        for match in PLACEHOLDER.finditer(text):
            parts.append(self.take(text[position : match.start()]))
            if self.left <= 0:
                return "".join(parts)
            key = (match[1], match[2])
            if key not in self._filled:
                self._filled[key] = _text(_lookup(data, *key))
            parts.append(self.take(self._filled[key]))
            position = match.end()
            if self.left <= 0:
                return "".join(parts)
        parts.append(self.take(text[position:]))
        return "".join(parts)

    def take(self, piece: str) -> str:
        piece = piece[: max(0, self.left)]
        self.left -= len(piece)
        return piece


def render(text: str, data: Mapping[str, Any]) -> str:
    """`text` with its placeholders filled from `data` (`{"state": {...}, "contact": {...}, "instance": {"id": ...},
    "template": {"id": ...}}`), by key lookup only; at most `MAX_RENDERED` characters."""
    return _Budget().render(text, data)


def render_json(value: Any, data: Mapping[str, Any]) -> Any:
    """A copy of a JSON value (a webhook body, an action's config) with every string value rendered.

    Keys are kept as written (rendering them could merge two keys); a placeholder inside a string yields
    text, so `"{state.count}"` becomes `"3"`, not `3`. All strings together are cut at `MAX_RENDERED`.
    """
    budget = _Budget()

    def walk(item: Any, depth: int) -> Any:
        if isinstance(item, str):
            return budget.render(item, data)
        if depth >= MAX_JSON_DEPTH:
            return item
        if isinstance(item, Mapping):
            return {key: walk(child, depth + 1) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [walk(child, depth + 1) for child in item]
        return item

    return walk(value, 0)
