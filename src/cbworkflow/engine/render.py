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
- In a URL (`render_url`, and the `url` of `render_call`) a value fills one path segment, one query value or the
  fragment, percent-encoded with nothing left safe (`/`, `?`, `#`, `&`, `=`, `%`, `@`, `:` all escaped, text as
  UTF-8), and a whole segment that would read `.` or `..` has its dots escaped too (`%2E`), since clients remove
  dot segments. The scheme and authority are never filled (`cbworkflow.urls.split_template`): a placeholder there
  stays as written, so the URL is refused instead of called. Nothing from a value can change where a call goes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Final
from urllib.parse import quote

from ..urls import split_template

__all__ = ["MAX_RENDERED", "PLACEHOLDER", "ROOTS", "render", "render_call", "render_json", "render_url"]

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


Encode = Callable[[str], str]
_PARTIAL_ESCAPE = re.compile(r"%[0-9A-F]?\Z")
_TRAILING_ESCAPES = re.compile(r"(?:%[0-9A-F]{2}){1,3}\Z")  # where a character cut short can end
_DOT_SEGMENTS = (".", "..")


def _url_value(text: str) -> str:
    """A value inside a URL: every reserved character escaped, so it stays within its path segment or query value."""
    return quote(text, safe="", errors="replace")


def _whole_characters(encoded: str) -> str:
    """Percent-encoded UTF-8 without the bytes of a last character that was cut short."""
    tail = _TRAILING_ESCAPES.search(encoded)
    if tail is None:
        return encoded
    octets = bytes.fromhex(tail[0].replace("%", ""))
    for back in range(1, len(octets) + 1):
        lead = octets[-back]
        if lead & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            needed = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            return encoded if needed <= back else encoded[: len(encoded) - 3 * back]
    return encoded


class _Budget:
    """Characters still allowed in the output, shared by every string of one rendered value (a `render_json` value,
    a call's URL, headers and body)."""

    def __init__(self, limit: int = MAX_RENDERED) -> None:
        self.left = limit
        self._filled: dict[tuple[str, str], str] = {}  # each placeholder is looked up and written out once

    def render(self, text: str, data: Mapping[str, Any], encode: Encode | None = None) -> str:
        """`text` with its placeholders filled, each value passed through `encode` (when given) first."""
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
            value = self._filled[key]
            # An encoded value is never shorter than the text: encoding what fits keeps the work bounded.
            parts.append(self.take(value) if encode is None else self.take_escaped(encode(value[: self.left])))
            position = match.end()
            if self.left <= 0:
                return "".join(parts)
        parts.append(self.take(text[position:]))
        return "".join(parts)

    def render_url(self, url: str, data: Mapping[str, Any]) -> str:
        head, path, query, fragment = split_template(url)
        parts = [self.take(head)]  # the scheme and authority, never filled
        for index, segment in enumerate(path.split("/")):
            if index:
                parts.append(self.take("/"))
            parts.append(self._path_segment(segment, data))
        for mark, part in (("?", query), ("#", fragment)):
            if part is not None:
                parts.extend((self.take(mark), self.render(part, data, _url_value)))
        return "".join(parts)

    def _path_segment(self, segment: str, data: Mapping[str, Any]) -> str:
        filled = self.render(segment, data, _url_value)
        if filled in _DOT_SEGMENTS and PLACEHOLDER.search(segment):
            self.left += len(filled)  # given back: the escaped form is taken in its place
            filled = self.take_escaped(filled.replace(".", "%2E"))
        return filled

    def walk(self, item: Any, data: Mapping[str, Any], depth: int) -> Any:
        if isinstance(item, str):
            return self.render(item, data)
        if depth >= MAX_JSON_DEPTH:
            return item
        if isinstance(item, Mapping):
            return {key: self.walk(child, data, depth + 1) for key, child in item.items()}
        if isinstance(item, list | tuple):
            return [self.walk(child, data, depth + 1) for child in item]
        return item

    def take(self, piece: str) -> str:
        piece = piece[: max(0, self.left)]
        self.left -= len(piece)
        return piece

    def take_escaped(self, piece: str) -> str:
        """`take` for percent-encoded text: a cut never leaves half an escape (`%C` of `%C3`), nor half a
        character (`%C3` of `%C3%A9`)."""
        taken = self.take(piece)
        return taken if len(taken) == len(piece) else _whole_characters(_PARTIAL_ESCAPE.sub("", taken))


def render(text: str, data: Mapping[str, Any]) -> str:
    """`text` with its placeholders filled from `data` (`{"state": {...}, "contact": {...}, "instance": {"id": ...},
    "template": {"id": ...}}`), by key lookup only; at most `MAX_RENDERED` characters."""
    return _Budget().render(text, data)


def render_url(url: str, data: Mapping[str, Any]) -> str:
    """A URL template filled from `data`: each value percent-encoded into the path segment, query value or fragment
    it stands in; the scheme and authority kept exactly as written. At most `MAX_RENDERED` characters."""
    return _Budget().render_url(url, data)


def render_json(value: Any, data: Mapping[str, Any]) -> Any:
    """A copy of a JSON value (a webhook body, an action's config) with every string value rendered.

    Keys are kept as written (rendering them could merge two keys); a placeholder inside a string yields
    text, so `"{state.count}"` becomes `"3"`, not `3`. All strings together are cut at `MAX_RENDERED`.
    """
    return _Budget().walk(value, data, 0)


def render_call(call: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of an outbound call (a webhook node's url, headers and body; an action's config) rendered under
    one `MAX_RENDERED` budget: a top-level string `url` as a URL (`render_url`), rendered first so a large body
    cannot starve it, and everything else as `render_json` renders it. Keys keep their order."""
    budget = _Budget()
    url = call.get("url")
    filled_url = budget.render_url(url, data) if isinstance(url, str) else url
    return {key: filled_url if key == "url" else budget.walk(item, data, 1) for key, item in call.items()}
