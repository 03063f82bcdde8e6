"""Placeholders: filled by key lookup only; hostile or malformed ones stay as written; the output is bounded."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbworkflow.engine.render import MAX_RENDERED, render, render_call, render_json, render_url

REFERENCE = Path(__file__).parents[2] / "src/cbworkflow/examples/county-outreach-v1.json"


def sample_data() -> dict[str, Any]:
    return {
        "state": {
            "door_notes": "prefers texting",
            "count": 3,
            "ratio": 2.5,
            "yes": True,
            "no": False,
            "nothing": None,
            "list": [1, "two", {"three": 3}],
            "obj": {"a": 1, "b": [True, None]},
            "deep": {"er": {"still": "found"}},
            "ünï": "keys outside the placeholder alphabet are not addressable",
            "__class__": "a key like any other",
        },
        "contact": {
            "id": "c0ffee",
            "name": "Ada Lovelace",
            "email": None,
            "metadata": {"ward": 5, "vote_day": "2026-11-03T08:00:00-05:00", "first-name": "Ada", "under_score": "u"},
        },
        "instance": {"id": "918522ac2f35"},
        "template": {"id": "county-outreach-v1"},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi {contact.name}!", "Hi Ada Lovelace!"),
        ("{state.door_notes}", "prefers texting"),
        ("{state.deep.er.still}", "found"),
        ("{contact.metadata.ward}", "5"),
        ("{contact.metadata.first-name} {contact.metadata.under_score}", "Ada u"),
        ("{instance.id}/{template.id}", "918522ac2f35/county-outreach-v1"),
        ("{state.count} {state.ratio}", "3 2.5"),
        ("{state.yes}/{state.no}", "true/false"),
        ("[{state.nothing}] [{contact.email}]", "[] []"),
        ("{state.list}", '[1, "two", {"three": 3}]'),
        ("{state.obj}", '{"a": 1, "b": [true, null]}'),
        ("{state.list.1} {state.list.2.three}", "two 3"),
        ("[{state.list.3}] [{state.list.-1}] [{state.list.x}]", "[] [] []"),
        ("{contact.metadata.vote_day}", "2026-11-03T08:00:00-05:00"),
        ("[{state.missing}] [{state.missing.deeper}] [{contact.name.first}]", "[] [] []"),
        ("[{state.count.x}] [{state.door_notes.0}]", "[] []"),  # only dicts and lists are looked into
        ("{state.__class__}", "a key like any other"),  # a key lookup, never an attribute
        ("{state.ünï}", "{state.ünï}"),
        ("no placeholders at all", "no placeholders at all"),
        ("", ""),
    ],
)
def test_placeholders(text: str, expected: str) -> None:
    assert render(text, sample_data()) == expected


# Lookups that only ever read dict keys: these two are placeholders for keys that do not exist.
EMPTIED = ["{state.__class__.__init__.__globals__}", "{contact.__class__.__mro__}"]
# Not placeholders at all: left exactly as written.
KEPT = [
    *("{contact.name!r}", "{contact.name!s:>1000000}", "{state.x:>1000000}", "{state.count:,}", "{0}", "{}"),
    *("{0.__class__}", "{not a placeholder}", "{ state.count }", "{state}", "{state.}", "{state..count}"),
    *("{event.name}", "{os.environ}", "{state[count]}", "{contact.name()}", "{{", "}}", "{", "{state.count"),
    *("{state.count!r}", "{STATE.count}", "{state.count }"),
]


@pytest.mark.parametrize("text", EMPTIED + KEPT)
def test_hostile_or_malformed_placeholders(text: str) -> None:
    rendered = render(f"<{text}>", sample_data())
    assert rendered == ("<>" if text in EMPTIED else f"<{text}>")


def test_not_a_placeholder_is_left_exactly() -> None:
    data = sample_data()
    assert render("{contact.name!r} {0} {state.x:>9} {{state.count}}", data) == "{contact.name!r} {0} {state.x:>9} {3}"
    assert render("{state.__class__.__init__}", data) == ""  # the key "__class__" holds a str: no key "__init__"


def test_the_reference_templates_texts_render() -> None:
    template = json.loads(REFERENCE.read_text())
    data = sample_data()
    sms = template["nodes"]["followup_text"]["action_config"]["message"]
    assert render(sms, data) == "Hi Ada Lovelace, thanks for talking with us! Reply STOP to opt out."
    prompt = render(template["nodes"]["door_decision"]["rule"]["prompt"], data)
    assert "canvasser notes: 'prefers texting'" in prompt
    assert "method for Ada Lovelace:" in prompt
    assert "{" not in prompt


def test_output_is_cut_at_the_limit() -> None:
    data = {"state": {"big": "x" * 60_000}}
    started = time.perf_counter()
    assert len(render("{state.big}" * 5_000, data)) == MAX_RENDERED  # 300 MB if it were not cut
    assert len(render("a" * 200_000, {})) == MAX_RENDERED
    assert render("ab{state.big}cd", data) == "ab" + "x" * 60_000 + "cd"
    huge = {"state": {"obj": {str(i): "y" * 100 for i in range(5_000)}}}  # ~550 KB as JSON
    assert len(render("{state.obj}" * 1_000, huge)) == MAX_RENDERED
    assert time.perf_counter() - started < 2  # generous: each placeholder past the limit costs nothing


def test_render_json() -> None:
    data = sample_data()
    body = {
        "to": "{contact.name}",
        "count": "{state.count}",
        "n": 1,
        "ok": True,
        "none": None,
        "list": ["{instance.id}", 2, {"deep": "{contact.metadata.ward}"}],
        "{state.count}": "keys stay as written",
    }
    before = copy.deepcopy(body)
    assert render_json(body, data) == {
        "to": "Ada Lovelace",
        "count": "3",
        "n": 1,
        "ok": True,
        "none": None,
        "list": ["918522ac2f35", 2, {"deep": "5"}],
        "{state.count}": "keys stay as written",
    }
    assert body == before
    assert render_json("{template.id}", data) == "county-outreach-v1"
    assert render_json(None, data) is None
    assert render_json(3.5, data) == 3.5


def test_render_json_shares_one_limit() -> None:
    data = {"state": {"big": "x" * 60_000}}
    rendered = render_json({"a": "{state.big}", "b": ["{state.big}", "{state.big}"], "c": "tail"}, data)
    total = len(rendered["a"]) + sum(len(s) for s in rendered["b"]) + len(rendered["c"])
    assert total == MAX_RENDERED
    assert rendered["a"] == "x" * 60_000


def test_render_json_of_a_deep_value_does_not_overflow() -> None:
    value: Any = "{contact.name}"
    for _ in range(10_000):
        value = [value]
    rendered = render_json(value, sample_data())
    for _ in range(10):
        rendered = rendered[0]
    assert isinstance(rendered, list)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
PIECES = st.sampled_from(["{", "}", "state", "contact", "instance", ".", "a", "0", "__class__", "!r", ":>9", " "])


@settings(max_examples=200, deadline=None, database=None)
@given(
    text=st.text(max_size=200) | st.lists(PIECES, max_size=30).map("".join),
    state=st.dictionaries(st.sampled_from(["a", "0", "__class__", "b"]), JSONISH, max_size=4),
)
def test_render_never_raises(text: str, state: dict[str, Any]) -> None:
    rendered = render(text, {"state": state, "contact": {"a": state}, "instance": {"id": "i"}})
    assert len(rendered) <= MAX_RENDERED
    if "{" not in text:
        assert rendered == text
    assert render_json({"t": text, "l": [text]}, {"state": state})["l"][0] == render(text, {"state": state})


# ---------------------------------------------------------------------------------------------- URLs
URL_DATA: dict[str, Any] = {
    "state": {
        "escape": "../../admin?x=1#",
        "dots": "..",
        "dot": ".",
        "three": "...",
        "slash": "a/b",
        "query": "a&b=c",
        "hash": "x#y",
        "question": "what?",
        "percent": "100%",
        "encoded": "%2F",
        "unicode": "Zoë 東京",
        "space": "two words",
        "empty": "",
        "count": 3,
        "at": "me@evil.example:81",
    },
    "contact": {"id": "c0ffee"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("http://host/p/{state.escape}", "http://host/p/..%2F..%2Fadmin%3Fx%3D1%23"),
        ("http://host/p/{state.slash}/tail", "http://host/p/a%2Fb/tail"),
        ("http://host/p/{state.dots}/admin", "http://host/p/%2E%2E/admin"),  # not a dot segment any more
        ("http://host/p/{state.dot}", "http://host/p/%2E"),
        ("http://host/p/{state.dot}{state.dot}", "http://host/p/%2E%2E"),  # the whole segment counts
        ("http://host/p/{state.three}/{state.dots}x", "http://host/p/.../..x"),  # not dot segments: kept
        ("http://host/p/../{state.count}", "http://host/p/../3"),  # the author's own `..` is the author's
        ("http://host/p?q={state.query}&r=1", "http://host/p?q=a%26b%3Dc&r=1"),
        ("http://host/p?q={state.hash}", "http://host/p?q=x%23y"),
        ("http://host/{state.question}?q={state.question}", "http://host/what%3F?q=what%3F"),
        ("http://host/{state.percent}?q={state.encoded}", "http://host/100%25?q=%252F"),
        ("http://host/{state.unicode}", "http://host/Zo%C3%AB%20%E6%9D%B1%E4%BA%AC"),
        ("http://host/a?q={state.space}", "http://host/a?q=two%20words"),
        ("http://host/{state.empty}/x?q={state.empty}", "http://host//x?q="),
        ("http://host/{state.missing}?q={state.missing.deeper}", "http://host/?q="),
        ("http://host/p#{state.escape}", "http://host/p#..%2F..%2Fadmin%3Fx%3D1%23"),
        ("http://host?q={state.at}", "http://host?q=me%40evil.example%3A81"),
        ("https://crm.example.org/{contact.id}", "https://crm.example.org/c0ffee"),
        ("http://host/{0}/{state.x:>9}/{not a placeholder}", "http://host/{0}/{state.x:>9}/{not a placeholder}"),
        # The scheme and authority are never filled: the URL stays as written, and the outbound check refuses it.
        ("http://{state.escape}/x", "http://{state.escape}/x"),
        ("http://host:{state.count}/x", "http://host:{state.count}/x"),
        ("http://{state.at}@host/x", "http://{state.at}@host/x"),
        ("{state.slash}://host/x", "{state.slash}://host/x"),
        ("host/{state.slash}", "host/{state.slash}"),  # no scheme: no path to fill
    ],
)
def test_render_url(template: str, expected: str) -> None:
    assert render_url(template, URL_DATA) == expected


VALUES = st.text(max_size=40) | st.sampled_from([".", "..", "...", "/", "?", "#", "%", "%2E%2E", "@", "a/../b", ""])


@settings(max_examples=200, deadline=None, database=None)
@given(value=VALUES)
def test_a_value_fills_one_segment_and_one_query_value_whatever_it_holds(value: str) -> None:
    """As a client reads the result (httpx removes dot segments), the value neither leaves its path segment or
    query value nor changes the host, port or credentials; decoding gives the value back."""
    data = {"state": {"v": value}}
    url = httpx.URL(render_url("http://user:pw@host:8080/p/{state.v}/end?q={state.v}&z=1#{state.v}", data))
    assert (url.scheme, url.userinfo, url.host, url.port) == ("http", b"user:pw", "host", 8080)
    segments = url.raw_path.decode().split("?", 1)[0].split("/")
    assert segments[:2] == ["", "p"]
    assert segments[3:] == ["end"]
    assert unquote(segments[2], errors="strict") == value.encode("utf-8", "replace").decode()
    query = parse_qs(url.query.decode(), keep_blank_values=True)
    assert query == {"q": [value.encode("utf-8", "replace").decode()], "z": ["1"]}


def test_render_call_shares_one_budget_and_renders_the_url_first() -> None:
    data = {"state": {"big": "x" * 60_000, "path": "a/b"}}
    call = {"body": {"a": "{state.big}", "b": "{state.big}"}, "url": "http://host/{state.path}/{state.big}"}
    rendered = render_call(call, data)
    assert list(rendered) == ["body", "url"]  # keys keep their order
    assert rendered["url"] == "http://host/a%2Fb/" + "x" * 60_000  # rendered first: the body cannot starve it
    assert len(rendered["url"]) + len(rendered["body"]["a"]) + len(rendered["body"]["b"]) == MAX_RENDERED
    assert rendered["body"]["b"] == ""
    headers = render_call({"url": "http://host/", "headers": {"X-Who": "{state.path}"}}, data)["headers"]
    assert headers == {"X-Who": "a/b"}  # only the url is a URL
    assert render_call({"url": 3, "message": "{state.path}"}, data) == {"url": 3, "message": "a/b"}


def test_a_url_cut_at_the_limit_never_ends_in_half_an_escape_or_half_a_character() -> None:
    for character in ("é", "東", "😀"):  # 2, 3 and 4 bytes of UTF-8
        data = {"state": {"e": character * 40_000}}
        for prefix in ("", "a", "ab", "abc", "abcd", "abcde"):
            rendered = render_url(f"http://host/{prefix}{{state.e}}", data)
            assert MAX_RENDERED - 12 < len(rendered) <= MAX_RENDERED
            decoded = unquote(rendered.removeprefix(f"http://host/{prefix}"), errors="strict")
            assert decoded == character * len(decoded)
