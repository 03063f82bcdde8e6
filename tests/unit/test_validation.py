"""Template validation: every code fires where it should, and the reference template is clean."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from cbworkflow.ids import SLUG_PATTERN
from cbworkflow.models.templates import Node, TemplateCreate, Trigger, ValidationReport
from cbworkflow.validation import MAX_EXPRESSION_CHARS, expression_problem, parse_duration, validate_template

REFERENCE = Path("/work/shared/spec/examples/county-outreach-v1.json")
NODE: TypeAdapter[Node] = TypeAdapter(Node)
END: dict[str, Any] = {"type": "end"}
ALL_CODES = {
    *("no_nodes", "start_node_missing", "start_node_unknown", "invalid_node_id", "invalid_outcome"),
    *("unknown_transition_target", "dead_end", "end_has_transitions", "end_status_invalid", "action_missing"),
    *("rule_missing", "rule_invalid", "fallback_unknown", "expression_too_long", "expression_too_deep"),
    *("expression_syntax", "expression_forbidden", "expression_unknown_name", "wait_condition_missing"),
    *("wait_condition_invalid", "wait_outcome_missing"),
    *("webhook_url_invalid", "webhook_method_invalid", "webhook_limits_invalid", "trigger_invalid"),
    *("unreachable", "no_path_to_end", "ai_no_fallback", "wait_outcome_unknown", "webhook_outcome_missing"),
}


def run(
    raw: dict[str, dict[str, Any]], start: str | None = "a", triggers: list[dict[str, Any]] | None = None
) -> ValidationReport:
    nodes = {node_id: NODE.validate_python(node) for node_id, node in raw.items()}
    return validate_template(start, nodes, [Trigger.model_validate(t) for t in triggers or []])


def one(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Node `a` (the start) followed by an end node `end`."""
    return {"a": node, "end": END}


def action(**extra: Any) -> dict[str, Any]:
    return {"type": "action", "action": "sms", "transitions": {"sent": "end"}, **extra}


def decision(rule: Any, transitions: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "decision", "rule": rule, "transitions": transitions or {"true": "end", "false": "end"}}


def wait(cond: Any, transitions: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "wait", "wait_condition": cond, "transitions": transitions or {"elapsed": "end"}}


def webhook(**extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "webhook_url": "https://example.org/hook", **extra}


WEBHOOK_OUTCOMES = {"success": "end", "failure": "end"}
EVENT_OUTCOMES = {"received": "end", "timeout": "end"}

ERROR_CASES: list[tuple[str, str | None, dict[str, dict[str, Any]], str | None]] = [
    ("no_nodes", "a", {}, None),
    ("start_node_missing", None, one(action()), None),
    ("start_node_missing", "  ", one(action()), None),
    ("start_node_unknown", "nowhere", one(action()), None),
    ("invalid_node_id", "Bad Id", {"Bad Id": action(), "end": END}, "Bad Id"),
    ("invalid_node_id", "ok\n", {"ok\n": action(), "end": END}, "ok\n"),  # `$` alone would accept it
    ("invalid_outcome", "a", one(action(transitions={"Sent OK": "end"})), "a"),
    ("invalid_outcome", "a", one(action(transitions={"sent\n": "end"})), "a"),
    ("unknown_transition_target", "a", one(action(transitions={"sent": "end", "failed": "ghost"})), "a"),
    ("dead_end", "a", one(action(transitions={})), "a"),
    ("end_has_transitions", "a", {"a": action(), "end": {"type": "end", "transitions": {"x": "a"}}}, "end"),
    ("end_status_invalid", "a", {"a": action(), "end": {"type": "end", "end_status": "Not OK"}}, "end"),
    ("action_missing", "a", one(action(action=None)), "a"),
    ("action_missing", "a", one(action(action="  ")), "a"),
    ("rule_missing", "a", one(decision(None)), "a"),
    ("rule_invalid", "a", one(decision({})), "a"),
    ("rule_invalid", "a", one(decision({"type": "magic"})), "a"),
    ("rule_invalid", "a", one(decision({"type": "ai"})), "a"),
    ("rule_invalid", "a", one(decision({"type": "heuristic", "expression": ""})), "a"),
    ("rule_invalid", "a", one(decision({"type": "manual", "colour": "red"})), "a"),
    (
        "rule_invalid",
        "a",
        one(decision({"type": "ai", "prompt": "p", "fallback": "true", "confirm": "zz"})),
        "a",
    ),
    ("fallback_unknown", "a", one(decision({"type": "ai", "prompt": "Pick", "fallback": "maybe"})), "a"),
    ("expression_syntax", "a", one(decision({"type": "heuristic", "expression": "state.x >"})), "a"),
    ("expression_syntax", "a", one(decision({"type": "heuristic", "expression": "   "})), "a"),
    (
        "expression_syntax",
        "a",
        one(decision({"type": "heuristic", "expression": "(" * 300 + ")" * 300})),
        "a",
    ),
    # pydantic refuses lone surrogates before validation sees them; expression_problem is tested on them below
    ("rule_invalid", "a", one(decision({"type": "heuristic", "expression": "x\ud800"})), "a"),
    ("expression_too_long", "a", one(decision({"type": "heuristic", "expression": "1" * 20_000})), "a"),
    ("expression_too_deep", "a", one(decision({"type": "heuristic", "expression": "-" * 9_999 + "1"})), "a"),
    ("expression_too_deep", "a", one(decision({"type": "heuristic", "expression": "not " * 200 + "x"})), "a"),
    ("expression_too_deep", "a", one(decision({"type": "heuristic", "expression": "1+" * 4_999 + "1"})), "a"),
    ("expression_forbidden", "a", one(decision({"type": "heuristic", "expression": "state.__class__"})), "a"),
    ("expression_forbidden", "a", one(decision({"type": "heuristic", "expression": "(lambda: 1)()"})), "a"),
    ("expression_forbidden", "a", one(decision({"type": "heuristic", "expression": "'{}'.format(state)"})), "a"),
    ("expression_unknown_name", "a", one(decision({"type": "heuristic", "expression": "x > 1"})), "a"),
    ("expression_unknown_name", "a", one(decision({"type": "heuristic", "expression": "event.name"})), "a"),
    ("expression_unknown_name", "a", one(decision({"type": "heuristic", "expression": "getattr(state, 'x')"})), "a"),
    ("wait_condition_missing", "a", one(wait(None)), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "sleep"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "duration", "duration": "3 days"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "duration", "duration": 3})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "duration", "duration": "P100Y"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "duration", "duration": "P3D", "note": "x"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "until", "until": "tomorrow"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "until", "until": "2026-11-03T08:00:00"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "until", "until": "{state.x} or so"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "until", "until": "{instance.id}"})), "a"),
    ("wait_condition_invalid", "a", one(wait({"type": "event", "event": " "}, {"received": "end"})), "a"),
    (
        "wait_condition_invalid",
        "a",
        one(wait({"type": "event", "event": "e", "timeout": "soon"}, EVENT_OUTCOMES)),
        "a",
    ),
    ("wait_outcome_missing", "a", one(wait({"type": "duration", "duration": "P3D"}, {"done": "end"})), "a"),
    ("wait_outcome_missing", "a", one(wait({"type": "until", "until": "{state.t}"}, {"done": "end"})), "a"),
    ("wait_outcome_missing", "a", one(wait({"type": "event", "event": "e"}, {"timeout": "end"})), "a"),
    (
        "wait_outcome_missing",
        "a",
        one(wait({"type": "event", "event": "e", "timeout": "P7D"}, {"received": "end"})),
        "a",
    ),
    ("webhook_url_invalid", "a", one(webhook(webhook_url=None, transitions=WEBHOOK_OUTCOMES)), "a"),
    (
        "webhook_url_invalid",
        "a",
        one(webhook(webhook_url="ftp://x.org/f", transitions=WEBHOOK_OUTCOMES)),
        "a",
    ),
    ("webhook_url_invalid", "a", one(webhook(webhook_url="https://", transitions=WEBHOOK_OUTCOMES)), "a"),
    (
        "webhook_url_invalid",
        "a",
        one(webhook(webhook_url="example.org/hook", transitions=WEBHOOK_OUTCOMES)),
        "a",
    ),
    (
        "webhook_url_invalid",
        "a",
        one(webhook(webhook_url="http://ex ample.org", transitions=WEBHOOK_OUTCOMES)),
        "a",
    ),
    (
        "webhook_url_invalid",
        "a",
        one(webhook(webhook_url="http://x.org:99999/", transitions=WEBHOOK_OUTCOMES)),
        "a",
    ),
    ("webhook_url_invalid", "a", one(webhook(webhook_url="http://[::1/", transitions=WEBHOOK_OUTCOMES)), "a"),
    ("webhook_method_invalid", "a", one(webhook(webhook_method="FETCH", transitions=WEBHOOK_OUTCOMES)), "a"),
    ("webhook_method_invalid", "a", one(webhook(webhook_method="post", transitions=WEBHOOK_OUTCOMES)), "a"),
    ("webhook_limits_invalid", "a", one(webhook(timeout_s=0, transitions=WEBHOOK_OUTCOMES)), "a"),
    ("webhook_limits_invalid", "a", one(webhook(timeout_s=float("nan"), transitions=WEBHOOK_OUTCOMES)), "a"),
    ("webhook_limits_invalid", "a", one(webhook(max_attempts=0, transitions=WEBHOOK_OUTCOMES)), "a"),
]


@pytest.mark.parametrize(("code", "start", "raw", "node"), ERROR_CASES)
def test_error_code_fires(code: str, start: str | None, raw: dict[str, dict[str, Any]], node: str | None) -> None:
    started = time.perf_counter()
    report = run(raw, start)
    assert time.perf_counter() - started < 0.5  # huge or deeply nested input must be refused quickly
    assert report.valid is False
    hits = [item for item in report.errors if item.code == code]
    assert hits, report
    assert hits[0].node == node
    assert hits[0].message.endswith(".")
    assert len(hits[0].message) < 400  # a 1 MB expression is never echoed back


WARNING_CASES: list[tuple[str, dict[str, dict[str, Any]], str]] = [
    ("unreachable", {"a": action(), "end": END, "orphan": action()}, "orphan"),
    ("no_path_to_end", {"a": action(transitions={"x": "b"}), "b": action(transitions={"y": "a"})}, "a"),
    ("ai_no_fallback", one(decision({"type": "ai", "prompt": "Pick one"})), "a"),
    (
        "wait_outcome_unknown",
        one(wait({"type": "duration", "duration": "2h"}, {"elapsed": "end", "timeout": "end"})),
        "a",
    ),
    ("wait_outcome_unknown", one(wait({"type": "event", "event": "e"}, EVENT_OUTCOMES)), "a"),
    ("webhook_outcome_missing", one(webhook(transitions={"success": "end"})), "a"),
]


@pytest.mark.parametrize(("code", "raw", "node"), WARNING_CASES)
def test_warning_code_fires(code: str, raw: dict[str, dict[str, Any]], node: str) -> None:
    report = run(raw)
    assert report.valid is True
    assert report.errors == []
    assert [item.node for item in report.warnings if item.code == code][:1] == [node]


@pytest.mark.parametrize(
    "trigger",
    [
        {"on": "tag_added"},
        {"on": "event"},
        {"on": "event", "event": "  "},
        {"on": "contact_created", "where": "contact.email =="},
        {"on": "contact_created", "where": "x" * (MAX_EXPRESSION_CHARS + 1)},
        {"on": "contact_created", "where": "state.x == 1"},  # a trigger has no state
        {"on": "event", "event": "signup", "where": "event.__class__"},
    ],
)
def test_trigger_invalid(trigger: dict[str, Any]) -> None:
    report = run(one(action()), triggers=[{"on": "contact_created"}, trigger])
    assert not report.valid
    assert [(item.code, item.node) for item in report.errors] == [("trigger_invalid", None)]
    assert report.errors[0].message.startswith("Trigger 2")


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("x\ud800", "expression_syntax"),
        ("x\x00", "expression_syntax"),
        ("state.x", None),
        ("(" * 300 + ")" * 300, "expression_syntax"),
        ("x" * 1_000_000, "expression_too_long"),
    ],
)
def test_expression_problem_never_raises(expression: str, code: str | None) -> None:
    problem = expression_problem(expression)
    assert (problem[0] if problem else None) == code


def test_expression_messages_say_what_to_use() -> None:
    report = run(one(decision({"type": "heuristic", "expression": "foo == 1"})))
    (item,) = report.errors
    assert item.message == (
        "Node 'a' has an expression that uses the name 'foo', which is not defined: "
        "use state, contact, now or a helper."
    )
    report = run(one(action()), triggers=[{"on": "contact_created", "where": "state.x"}])
    assert report.errors[0].message == (
        "Trigger 1 (contact_created) has a where expression that uses the name 'state', which is not defined: "
        "use contact, event, now or a helper."
    )


def test_reference_template_is_clean() -> None:
    template = TemplateCreate.model_validate(json.loads(REFERENCE.read_text()))
    report = validate_template(template.start_node, template.nodes, template.triggers)
    assert report == ValidationReport(valid=True, errors=[], warnings=[])


@pytest.mark.parametrize(
    "node",
    [
        wait({"type": "duration", "duration": "PT2H30M"}),
        wait({"type": "until", "until": "2026-11-03T08:00:00-05:00"}),
        wait({"type": "until", "until": "2026-11-03T13:00:00Z"}),
        wait({"type": "until", "until": "{contact.metadata.vote_day}"}),
        wait({"type": "event", "event": "rsvp_received"}, {"received": "end"}),
        wait({"type": "event", "event": "rsvp_received", "timeout": "P7D"}, EVENT_OUTCOMES),
        decision({"type": "heuristic", "expression": "contains(lower(contact.name), 'a') and state['n'] > 2"}),
        decision({"type": "manual"}),
        decision({"type": "ai", "prompt": "Yes or no?", "fallback": "false", "confirm": True}),
        webhook(webhook_method="PATCH", transitions=WEBHOOK_OUTCOMES),
        webhook(webhook_url="http://10.0.0.1:8080/x?y={contact.id}", transitions=WEBHOOK_OUTCOMES),
    ],
)
def test_well_formed_nodes_are_clean(node: dict[str, Any]) -> None:
    triggers: list[dict[str, Any]] = [
        {"on": "contact_created", "where": "contact.email is not None"},
        {"on": "event", "event": "signup", "where": "event.source == 'web' and days_since(contact.created_at) < 1"},
        {"on": "tag_added", "tag": "volunteer_lead"},
        {"on": "event", "event": "signup", "reenter": True},
    ]
    assert run(one(node), triggers=triggers) == ValidationReport(valid=True)


def test_messages_name_the_node_and_what_is_wrong() -> None:
    report = run(one(action(name="First call", transitions={"no_answer": "ghost", "sent": "end"})))
    (item,) = report.errors
    assert item.code == "unknown_transition_target"
    assert "'First call'" in item.message
    assert "'no_answer'" in item.message
    assert "'ghost'" in item.message


def test_order_is_template_wide_then_node_order_then_code() -> None:
    raw = {
        "z": action(action=None, transitions={"Bad": "ghost"}),
        "a": {"type": "end", "transitions": {"x": "z"}},
        "b": action(transitions={}),
    }
    report = run(raw, start="nowhere")
    assert [(item.node, item.code) for item in report.errors] == [
        (None, "start_node_unknown"),
        ("z", "action_missing"),
        ("z", "invalid_outcome"),
        ("z", "unknown_transition_target"),
        ("a", "end_has_transitions"),
        ("b", "dead_end"),
    ]
    assert report == run(raw, start="nowhere")


def test_loops_with_an_exit_and_unreachable_loops() -> None:
    raw = {
        "a": action(transitions={"again": "a", "done": "end"}),
        "end": END,
        "island": action(transitions={"x": "island"}),
    }
    report = run(raw)
    assert report.errors == []
    assert [(item.node, item.code) for item in report.warnings] == [("island", "unreachable")]


def test_without_a_valid_start_loops_are_still_reported() -> None:
    report = run({"a": action(transitions={"x": "a"})}, start=None)
    assert [(item.node, item.code) for item in report.warnings] == [("a", "no_path_to_end")]


def test_two_thousand_nodes_validate_fast() -> None:
    raw = {f"n{i}": action(transitions={"sent": f"n{i + 1}", "failed": "n0"}) for i in range(1999)}
    raw["n1999"] = END
    raw["n7"] = decision({"type": "heuristic", "expression": "state.x > 3"}, {"true": "n8", "false": "n9"})
    nodes = {node_id: NODE.validate_python(node) for node_id, node in raw.items()}
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        report = validate_template("n0", nodes)
        best = min(best, time.perf_counter() - started)
    assert report == ValidationReport(valid=True)
    assert best < 0.1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P3D", timedelta(days=3)),
        ("PT2H30M", timedelta(hours=2, minutes=30)),
        ("PT5S", timedelta(seconds=5)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT0S", timedelta(0)),
        ("3d", timedelta(days=3)),
        ("2h", timedelta(hours=2)),
        ("30m", timedelta(minutes=30)),
        (" 45s ", timedelta(seconds=45)),
        ("P3653D", timedelta(days=3653)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "P1Y",
        "P1M",
        "P1W2D",
        "-3d",
        "3 d",
        "3D",
        "1w",
        "P3654D",
        "P9999999999999D",
        "\u0663d",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# --- properties -------------------------------------------------------------------------------------------

IDS = ["a", "b", "c", "end", "x-1", "Bad Id", "", "n" * 70]
OUTCOMES = ["sent", "failed", "true", "elapsed", "received", "timeout", "success", "failure", "Bad Outcome"]
TEXT = st.text(max_size=30)
LOOSE = st.dictionaries(
    st.sampled_from(["type", "expression", "prompt", "fallback", "confirm", "duration", "until", "event", "timeout"]),
    st.one_of(TEXT, st.booleans(), st.none(), st.integers(), st.sampled_from(["ai", "heuristic", "event", "P3D"])),
    max_size=5,
)


EXTRA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "action": st.fixed_dictionaries({"action": st.none() | TEXT}),
    "decision": st.fixed_dictionaries({"rule": st.none() | LOOSE}),
    "wait": st.fixed_dictionaries({"wait_condition": st.none() | LOOSE}),
    "webhook": st.fixed_dictionaries(
        {"webhook_url": st.none() | TEXT | st.just("https://x.org"), "webhook_method": TEXT}
    ),
    "end": st.fixed_dictionaries({"end_status": st.sampled_from(["success", "Bad Status"])}),
}


@st.composite
def random_node(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["action", "decision", "wait", "webhook", "end"]))
    node: dict[str, Any] = {
        "type": kind,
        "name": draw(st.none() | TEXT),
        "transitions": draw(st.dictionaries(st.sampled_from(OUTCOMES), st.sampled_from([*IDS, "ghost"]), max_size=4)),
    }
    return {**node, **draw(EXTRA[kind])}


TRIGGERS = st.lists(
    st.fixed_dictionaries(
        {"on": st.sampled_from(["contact_created", "tag_added", "event"])},
        optional={"tag": st.just("lead"), "event": TEXT, "where": TEXT},
    ),
    max_size=3,
)


@settings(max_examples=80, deadline=None, database=None)
@given(
    start=st.none() | st.sampled_from(IDS),
    raw=st.dictionaries(st.sampled_from(IDS), random_node(), max_size=8),
    triggers=TRIGGERS,
)
def test_random_graphs_never_raise(
    start: str | None, raw: dict[str, dict[str, Any]], triggers: list[dict[str, Any]]
) -> None:
    report = run(raw, start, triggers)
    assert report.valid == (report.errors == [])
    items = report.errors + report.warnings
    assert {item.code for item in items} <= ALL_CODES
    assert all(item.node is None or item.node in raw for item in items)
    assert all(item.message for item in items)
    assert report == run(raw, start, triggers)


@settings(max_examples=50, deadline=None, database=None)
@given(
    ids=st.lists(st.from_regex(SLUG_PATTERN, fullmatch=True), min_size=1, max_size=15, unique=True),
    outcome=st.from_regex(SLUG_PATTERN, fullmatch=True),
    action_name=st.text(min_size=1, max_size=20).filter(str.strip),
    name=st.none() | TEXT,
)
def test_linear_chain_is_valid_without_warnings(
    ids: list[str], outcome: str, action_name: str, name: str | None
) -> None:
    raw: dict[str, dict[str, Any]] = {
        node_id: {"type": "action", "action": action_name, "name": name, "transitions": {outcome: nxt}}
        for node_id, nxt in itertools.pairwise(ids)
    }
    raw[ids[-1]] = END
    assert run(raw, ids[0]) == ValidationReport(valid=True)


@pytest.mark.parametrize(
    "url", ["https://{state.host}/hook", "https://a{contact.id}.example.org/", "https://{state.h}:8080/"]
)
def test_a_webhook_host_may_not_come_from_a_placeholder(url: str) -> None:
    nodes = {
        "hook": {"type": "webhook", "webhook_url": url, "transitions": {"success": "end", "failure": "end"}},
        "end": {"type": "end"},
    }
    body = TemplateCreate.model_validate({"name": "t", "start_node": "hook", "nodes": nodes})
    report = validate_template(body.start_node, body.nodes, body.triggers)
    assert [e.code for e in report.errors] == ["webhook_url_invalid"]
    assert "placeholder" in report.errors[0].message


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:0/", "port 0 is out of range (1-65535)"),
        ("http://[::1%25lo]/", "has a zone id"),
        ("http://a@b@example.org/hook", "credentials"),
        ("http://[v1.fe]/", "not a valid IPv6 address"),
        ("http://example.org/{state.x}\\..", "backslash"),
    ],
)
def test_a_webhook_url_the_worker_would_refuse_says_why(url: str, said: str) -> None:
    """The reason is the outbound client's own (one check, `urls.check_url`), with the URL as written."""
    report = run(one(webhook(webhook_url=url, transitions=WEBHOOK_OUTCOMES)))
    [error] = report.errors
    assert error.code == "webhook_url_invalid"
    assert said in error.message
    assert error.message.startswith(f"Node 'a' has a webhook_url that cannot be called ({url!r})")


def test_placeholders_in_a_webhook_path_query_and_fragment_are_fine() -> None:
    url = "https://crm.example.org/people/{contact.id}/{state.x}?ward={contact.metadata.ward}&q={state.q}#{state.f}"
    assert run(one(webhook(webhook_url=url, transitions=WEBHOOK_OUTCOMES))).errors == []
