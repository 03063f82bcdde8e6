"""The expression sandbox: what heuristic rules and trigger `where`s can say, and what they can never do.

The escape corpus is the point of this file: each attack must be refused or bounded with an ExpressionError,
quickly and without growing the process. Time and memory bounds here are correctness properties of the sandbox
(a hang or an OOM is the bug), so they are asserted with generous margins.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbworkflow.engine.sandbox import (
    HELPERS,
    MAX_EXPRESSION_CHARS,
    MAX_EXPRESSION_DEPTH,
    MAX_SIZE,
    METHODS,
    RULE_NAMES,
    TRIGGER_NAMES,
    ExpressionError,
    evaluate,
    static_problem,
)
from cbworkflow.validation import MAX_EXPRESSION_DEPTH as VALIDATION_DEPTH

REFERENCE = Path(__file__).parents[2] / "src/cbworkflow/examples/county-outreach-v1.json"
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SLOW = 0.5  # seconds: far above the 50 ms deadline, far below any hang


def sample_state() -> dict[str, Any]:
    return {
        "door_notes": "Prefers texting; gave a mobile number",
        "calls": 3,
        "score": 2.5,
        "last_call": "2026-03-01T12:00:00Z",
        "rsvp": True,
        "answers": ["yes", "maybe", "yes"],
        "items": [{"name": "sign", "qty": 2}, {"name": "shirt", "qty": 1}],
        "nested": {"a": {"b": 7}},
    }


def sample_contact() -> dict[str, Any]:
    return {
        "id": "c0ffee",
        "name": "Ada Lovelace",
        "email": None,
        "phone": "(555) 201-3344",
        "phone_e164": "+15552013344",
        "county": "Kent",
        "organization": None,
        "role": "voter",
        "external_id": None,
        "tags": ["voter", "vip"],
        "metadata": {"ward": 5, "language": "en", "vote_day": "2026-11-03T08:00:00-05:00"},
        "created_at": "2026-01-02T12:00:00+00:00",
    }


def run(expression: str, state: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    variables = {"state": sample_state() if state is None else state, "contact": sample_contact()}
    return evaluate(expression, variables, now=NOW, **kwargs)


def refused(expression: str, **kwargs: Any) -> ExpressionError:
    # CPU time of this thread, not wall time: what is bounded is the work done, and a loaded machine that
    # pauses the test between two instructions must not fail it.
    started = time.thread_time()
    with pytest.raises(ExpressionError) as caught:
        run(expression, **kwargs)
    assert time.thread_time() - started < SLOW, expression[:80]
    return caught.value


# --- what expressions can say ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("state.calls > 2", True),
        ("state.calls", 3),
        ("state['calls']", 3),
        ("state.nested.a.b", 7),
        ("state['nested']['a']['b'] == state.nested.a.b", True),
        ("state.missing", None),
        ("state.missing.deeper.still", None),
        ("state['missing']['deeper']", None),
        ("state.answers[7]", None),
        ("state.answers[-1]", "yes"),
        ("state.answers[1:]", ["maybe", "yes"]),
        ("state.door_notes[:7]", "Prefers"),
        ("state.rsvp and state.calls >= 3", True),
        ("state.missing or 'default'", "default"),
        ("not state.missing", True),
        ("1 < state.calls <= 3 < 4", True),
        ("state.calls == 3 and state.score != 2", True),
        ("'yes' if state.rsvp else 'no'", "yes"),
        ("state.calls * 2 + state.score", 8.5),
        ("state.calls // 2, state.calls % 2, 2 ** 10, -state.calls, 7 / 2", (1, 1, 1024, -3, 3.5)),
        ("1 << 10 | 1", 1025),
        ("'vip' in contact.tags", True),
        ("'donor' not in contact.tags", True),
        ("contact.email is None", True),
        ("contact.metadata.ward", 5),
        ("contact.metadata['language'] == 'en'", True),
        ("len(contact.tags)", 2),
        ("len(state.missing)", 0),
        ("int('42') + int(3.9) + int(True)", 46),
        ("float('2.5') * 2", 5.0),
        ("str(state.calls) + 'x'", "3x"),
        ("bool(state.answers)", True),
        ("abs(-4)", 4),
        ("round(2.567, 2)", 2.57),
        ("min(state.answers), max(3, 9, 4)", ("maybe", 9)),
        ("max([], default=0)", 0),
        ("sum(item.qty for item in state['items'])", 3),
        ("any(a == 'maybe' for a in state.answers)", True),
        ("all(a for a in state.answers)", True),
        ("sorted(state.answers, reverse=True)", ["yes", "yes", "maybe"]),
        ("lower(contact.name)", "ada lovelace"),
        ("upper(state.missing)", ""),
        ("contains(lower(state.door_notes), 'text')", True),
        ("contains(state.missing, 'text')", False),
        ("contains(contact.tags, 'vip')", True),
        ("contains(contact.metadata, 'ward')", True),
        ("days_since(state.last_call)", 3.0),
        ("hours_since(contact.created_at)", 1464.0),
        ("days_since('2026-03-03')", 1.5),  # no offset: UTC
        ("days_since(state.missing)", None),
        ("days_since(state.last_call) > 2", True),
        ("now.year, now.month, now.day, now.hour, now.weekday()", (2026, 3, 4, 12, 2)),
        ("now.isoformat()", "2026-03-04T12:00:00+00:00"),
        ("(now - now).total_seconds()", 0.0),
        ("state.door_notes.lower().startswith('prefers')", True),
        ("state.door_notes.split(';')[0].strip()", "Prefers texting"),
        ("', '.join(contact.tags)", "voter, vip"),
        ("contact.name.replace('Ada', 'A.')", "A. Lovelace"),
        ("contact.name.count('a')", 2),
        ("contact.phone_e164.removeprefix('+1')", "5552013344"),
        ("contact.name.partition(' ')", ("Ada", " ", "Lovelace")),
        ("'7'.zfill(3), 'a'.ljust(3, '.'), 'b'.center(3)", ("007", "a..", " b ")),
        ("contact.metadata.get('ward'), contact.metadata.get('nope', 0)", (5, 0)),
        ("sorted(contact.metadata.keys())", ["language", "vote_day", "ward"]),
        ("contact.tags.count('vip'), contact.tags.index('vip')", (1, 1)),
        ("[t.upper() for t in contact.tags if t != 'voter']", ["VIP"]),
        ("{k: v for k, v in contact.metadata.items() if k != 'vote_day'}", {"ward": 5, "language": "en"}),
        ("{a for a in state.answers}", {"yes", "maybe"}),
        ("[x * y for x in [1, 2] for y in [10, 100] if x * y != 20]", [10, 100, 200]),
        ("len([x for x in state.answers if x == 'yes'])", 2),
        ("[_ for _ in 'ab']", ["a", "b"]),
        ("f'tier_{state.calls}'", "tier_3"),
        ("f'{contact.name} ({state.missing})'", "Ada Lovelace (None)"),
        ("{'a': 1, 'b': [1, 2]}['b'][1]", 2),
        ("(1, 2) + (3,)", (1, 2, 3)),
        ("~5, ~True", (-6, -2)),
        ("str({'k': [1, 2]}.items())", "[('k', [1, 2])]"),
        ("[1] * 3", [1, 1, 1]),
        ("{1, 2} | {3}", {1, 2, 3}),
        ("contact['__class__']", None),  # a key lookup on a dict, nothing more
        ("state.items", [{"name": "sign", "qty": 2}, {"name": "shirt", "qty": 1}]),  # not called: the key
        ("'-' * 50000 + '1' == '-' * 50000 + '1'", True),  # fine: under the size limit
        ("10 ** 308 > 0", True),  # every number a JSON float can hold
    ],
)
def test_expression_values(expression: str, expected: Any) -> None:
    assert static_problem(expression, RULE_NAMES) is None
    assert run(expression) == expected


@pytest.mark.parametrize(
    ("notes", "mobile", "expected"),
    [
        ("Prefers TEXTING", None, "text"),
        ("Call after 6", "+15551234567", "text"),
        ("Likes postcards", None, "mail"),
        (None, None, "mail"),
    ],
)
def test_the_door_decision_as_a_heuristic(notes: str | None, mobile: str | None, expected: str) -> None:
    """The reference template's door decision (an AI rule there), written as the heuristic an organiser would."""
    expression = "'text' if contains(lower(state.door_notes), 'text') or state.mobile is not None else 'mail'"
    state = {"door_notes": notes, "mobile": mobile}
    assert run(expression, state=state) == expected


def test_the_reference_templates_rules_evaluate_to_outcomes() -> None:
    """Every heuristic rule of the reference template gives one of its node's outcomes on sample states."""
    template = json.loads(REFERENCE.read_text())
    decisions = [node for node in template["nodes"].values() if node["type"] == "decision"]
    assert decisions, "the reference template has a decision node"
    for node in decisions:
        if node["rule"]["type"] != "heuristic":
            continue  # today its one decision is an AI rule: nothing to run here
        for state in (sample_state(), {}):
            value = run(node["rule"]["expression"], state=state)
            outcome = ("true" if value else "false") if isinstance(value, bool) else value
            assert outcome in node["transitions"]
    for trigger in template.get("triggers", []):
        if trigger.get("where"):
            evaluate(trigger["where"], {"contact": sample_contact(), "event": {}}, now=NOW)


def test_triggers_see_contact_and_event() -> None:
    variables = {"contact": sample_contact(), "event": {"name": "signup", "data": {"source": "web"}}}
    assert evaluate("event.data.source == 'web' and 'vip' in contact.tags", variables, now=NOW) is True
    assert static_problem("event.name == 'signup'", TRIGGER_NAMES) is None
    assert static_problem("state.x", TRIGGER_NAMES) == (
        "expression_unknown_name",
        "uses the name 'state', which is not defined: use contact, event, now or a helper",
    )
    assert static_problem("event.x", RULE_NAMES) is not None


def test_now_defaults_to_the_current_utc_time_and_naive_is_utc() -> None:
    before = datetime.now(UTC)
    value = evaluate("now", {})
    assert value.tzinfo is not None
    assert before <= value <= datetime.now(UTC)
    assert evaluate("now", {}, now=datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert evaluate("days_since('2026-01-01T00:00:00+01:00')", {}, now=datetime(2026, 1, 1)) == pytest.approx(1 / 24)


def test_variables_are_never_changed() -> None:
    state, contact = sample_state(), sample_contact()
    before = copy.deepcopy((state, contact))
    for expression in (
        "sorted(state.answers)",
        "state.answers + ['no']",
        "[i for i in state['items']]",
        "contact.metadata.items()",
        "state.answers * 2",
    ):
        evaluate(expression, {"state": state, "contact": contact}, now=NOW)
    assert (state, contact) == before


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("state.missing > 3", "'>' not supported between None and int (a missing key or field gives None)"),
        ("1 < 'a'", "'<' not supported between int and str"),
        ("now > state.last_call", "between datetime and str (for a time written as text, use days_since()"),
        ("'a' + 1", "'+' not supported between str and int"),
        ("-'a'", "'-' not supported for str"),
        ("'x' in state.missing", "'in' needs text, a list or a dict"),
        ("state.calls / 0", "divides by zero"),
        ("int('3.5')", "int() cannot read '3.5' as a whole number"),
        ("float('abc')", "float() cannot read 'abc' as a number"),
        ("int(state.missing)", "int() needs a number or text, not None"),
        ("days_since('yesterday')", "days_since() cannot read 'yesterday'"),
        ("days_since(3)", "days_since() needs an ISO 8601 date and time, not int"),
        ("state.missing.lower()", "cannot call lower() on None"),
        ("state.calls.lower()", "an int value has no method lower()"),
        ("contact.name.upper", "upper is a method of str: call it"),
        ("contact.tags.first", "a list value has no field 'first'"),
        ("now.tzinfo", "a datetime value has no field 'tzinfo'"),
        ("contact.tags['a']", "a list is indexed by whole numbers, not str"),
        ("state.calls[0]", "an int value cannot be indexed"),
        ("[1][::0]", "a slice step cannot be zero"),
        ("max([])", "max() of an empty list"),
        ("sum(['a'])", "sum() adds numbers only, not str"),
        ("[x for x in state.missing]", "needs a list, text or dict to loop over, not None"),
        ("[a for a, b in state.answers]", "cannot unpack"),
        ("{[1]: 2}", "a list cannot be a dict key"),
        ("{[1], 2}", "a list cannot be a set item"),
        ("{x: 1 for x in [[1]]}", "a list cannot be a dict key"),
        ("{x for x in [{}]}", "a dict cannot be a set item"),
        ("contact.tags.index('donor')", "the value is not in the list"),
        ("'abc'.index('z')", "substring not found"),
        ("'%s' % contact.name", "'%' formatting of text is not available"),
        ("round(1.5, 10 ** 6)", "round() takes a whole number of digits"),
        ("(-8) ** 0.5", "the result is a complex number"),
        ("10.0 ** 400", "a number would be too large"),
        ("1e308 * 10", "not a finite number"),
        ("float('nan')", "not a finite number"),
        ("2 ** 1024", "a number would be too large"),
        ("(now - now) * 10 ** 400", "a number would be too large"),
    ],
)
def test_errors_say_what_is_wrong(expression: str, message: str) -> None:
    error = refused(expression)
    assert message in str(error)
    assert len(str(error)) <= 300


# --- the escape corpus ----------------------------------------------------------------------------------------

# (expression, a phrase of its error). Static refusals, run-time refusals and bounded work alike.
CORPUS: list[tuple[str, str]] = [
    ("().__class__.__bases__[0].__subclasses__()", "private name '__class__'"),
    ("getattr(state, '__class__')", "calls 'getattr', which is not a helper"),
    ("'{0.__class__}'.format(state)", "the method 'format', which is not available"),
    ("'{0.__class__}'.format_map(state)", "the method 'format_map'"),
    ("(lambda: 1)()", "uses a lambda"),
    ("(x for x in []).gi_frame", "a list value has no field 'gi_frame'"),
    ("[x for x in []].gi_code", "no field 'gi_code'"),
    ("3999999 ** 3999999", "a number would be too large"),
    ("9 ** 9 ** 9", "a number would be too large"),
    ("1 << 10 ** 6", "a number would be too large"),
    ("2 ** 1023 * 4", "a number would be too large"),
    ("'a' * 10 ** 10", "too large (over 100,000 characters)"),
    ("10 ** 10 * 'a'", "too large (over 100,000 characters)"),
    ("'a'.ljust(3 * 10 ** 8)", "too large (over 100,000 characters)"),
    ("'a'.rjust(10 ** 9, 'x')", "too large"),
    ("'a'.center(10 ** 9)", "too large"),
    ("'1'.zfill(10 ** 9)", "too large (over 100,000 characters)"),
    ("('a' * 90000).replace('a', 'a' * 90000)", "too large (over 100,000 characters)"),
    ("('a' * 1000).replace('', 'b' * 1000)", "too large"),
    ("'x'.join(['a' * 60000, 'b' * 60000])", "too large"),
    ("('a' * 60000) + ('b' * 60000)", "too large"),
    ("[[0] * 10000] * 10000", "too large"),
    ("[{'k': [0.5] * 99999}.items() for _ in 'abcdefghijk']", "too large"),
    ("str({'k': [0.5] * 99999}.items())", "too large"),
    ("[0] * 10 ** 9", "too large (over 100,000 items)"),
    ("[x for x in range(10 ** 9)]", "calls 'range', which is not a helper"),
    ("max(range(10 ** 9))", "calls 'range'"),
    ("[x for x in 'a' * 99999 for y in 'a' * 99999]", "loops over more than 100,000 items"),
    ("[[y for y in 'a' * 1000] for x in 'a' * 1000]", "loops over more than 100,000 items|took longer than 50 ms"),
    ("sorted(x for x in 'a' * 99999 for y in 'ab')", "loops over more than 100,000 items"),
    ("str(['a' * 99999] * 9)", "too large"),
    ("str([10 ** 300] * 1000)", "too large"),
    ("[['a' * 50000] * 10 for _ in 'abcdefghijk']", "too large"),
    ("[('a' * 99999) for _ in 'abcdefghijk']", "builds too much (over 1,000,000 characters and items in all)"),
    ("int('-' * 50000 + '1')", "cannot read text of over 400 characters"),
    ("int('9' * 5000)", "cannot read text of over 400 characters"),
    ("int('9' * 400)", "a number would be too large"),
    ("float('9' * 400)", "not a finite number"),
    ("'(' * 300 + ')' * 300", "does not parse"),  # the text of an expression: evaluated below as itself
    ("state.__dict__", "private name '__dict__'"),
    ("state._secret", "private name '_secret'"),
    ("str.__mro__", "private name '__mro__'"),
    ("[].pop.__self__", "private name '__self__'"),
    ("{}.keys().mapping", "a list value has no field 'mapping'"),
    ("contact.items().mapping", "no field 'mapping'"),
    ("'%s' % state", "'%' formatting of text is not available"),
    ("'%*d' % (10 ** 9, 1)", "'%' formatting of text is not available"),
    ("f'{state!r:>{10 ** 9}}'", "format spec in an f-string"),
    ("f'{state:>1000000000}'", "format spec in an f-string"),
    ("f'{state!a}'", "format spec in an f-string"),
    ("1e308 * 10", "not a finite number"),
    ("sorted([0] * 99999 * 2)", "too large"),
    ("__import__('os').system('true')", "private name '__import__'"),
    ("eval('1')", "calls 'eval', which is not a helper"),
    ("exec('1')", "calls 'exec'"),
    ("open('/etc/passwd')", "calls 'open'"),
    ("type(state)", "calls 'type'"),
    ("vars(state)", "calls 'vars'"),
    ("globals()", "calls 'globals'"),
    ("(y := 1)", "uses an assignment (:=)"),
    ("[*contact.tags]", "uses * unpacking"),
    ("len(*contact.tags)", "uses * unpacking"),
    ("{**state}", "uses ** unpacking"),
    ("sorted(contact.tags, key=len)", "passes key= to sorted()"),
    ("sorted(**state)", "uses ** unpacking"),
    ("contact.name.split(maxsplit=1)", "passes a keyword to split()"),
    ("state.answers.append('x')", "the method 'append', which is not available"),
    ("state.answers.pop()", "the method 'pop'"),
    ("contact.metadata.update({})", "the method 'update'"),
    ("contact.metadata.clear()", "the method 'clear'"),
    ("now.replace(year=1)", "passes a keyword to replace()"),
    ("now.replace(1)", "a datetime value has no method replace()"),
    ("contact.name.encode()", "the method 'encode'"),
    ("contact.name.expandtabs(10 ** 9)", "the method 'expandtabs'"),
    ("contact.name.translate({})", "the method 'translate'"),
    ("now.astimezone()", "the method 'astimezone'"),
    ("b'abc'", "a bytes literal"),
    ("1j", "a complex literal"),
    ("...", "an ellipsis literal"),
    ("0x" + "f" * 400, "a number that is too large"),
    ("1e999", "a number that is too large"),
    ("[x for x.y in state.answers]", "loops into something that is not a name"),
    ("[x for state['a'] in state.answers]", "loops into something that is not a name"),
    ("state.answers[1:2, 3]", "slice inside a tuple"),
    ("'a' @ 'b'", "the @ operator"),
    ("state()", "calls 'state', which is not a helper"),
    ("state.answers[0]()", "calls something that is not a helper or a method"),
    ("len", "uses the helper 'len' without calling it"),
    ("[len for x in 'ab']", "uses the helper 'len' without calling it"),
    ("len(1, 2)", "calls len() with 2 values (it takes 1)"),
    ("foo", "uses the name 'foo', which is not defined: use state, contact, now or a helper"),
    ("[x for x in 'ab'] + [x]", "uses the name 'x', which is not defined"),
    ("[y for x in 'ab' for y in y]", "uses the name 'y'"),
    ("'a' if state else (lambda: 1)", "uses a lambda"),
    ("[state for _ in 'ab'][0].__class__", "private name '__class__'"),
    ("contact.name.lower.__call__()", "private name '__call__'"),
    ("str(state.__class__)", "private name '__class__'"),
    ("[c for c in ().__class__.__base__.__subclasses__()]", "private name '__class__'"),
    ("x\x00", "does not parse"),
    ("x\ud800", "does not parse"),
    ("-" * 9_999 + "1", "nested too deeply to parse"),
    ("not " * 200 + "state", "nests deeper than 100 levels"),
    ("[" * 150 + "]" * 150, "nests deeper than 100 levels"),
    ("[" * 250 + "]" * 250, "does not parse (too many nested parentheses"),
    ("[" * 99 + "[x for x in 'a' * 9999]" + "]" * 99, "nests deeper than 100 levels"),
    ("1" * 1_000_000, "is 1,000,000 characters long (the limit is 10,000)"),
    ("state.x" + " or state.x" * 1_000, "characters long"),
]


def corpus_expression(expression: str) -> str:
    """The corpus lists some expressions as Python text producing them (long or nested ones)."""
    return "(" * 300 + ")" * 300 if expression == "'(' * 300 + ')' * 300" else expression


@pytest.mark.parametrize(("expression", "message"), CORPUS, ids=[f"corpus{i}" for i in range(len(CORPUS))])
def test_escape_corpus_is_refused_quickly(expression: str, message: str) -> None:
    error = refused(corpus_expression(expression))
    assert any(part in str(error) for part in message.split("|")), str(error)
    assert len(str(error)) <= 300


def test_the_corpus_keeps_memory_flat() -> None:
    """Run the whole corpus in a fresh process: its peak memory grows by less than 50 MB."""
    script = """
import json, resource, sys
from cbworkflow.engine.sandbox import ExpressionError, evaluate
variables = {"state": {"answers": ["yes"]}, "contact": {"name": "Ada", "tags": ["vip"]}}
evaluate("[x for x in 'ab'] + sorted({'a': 1})", variables)  # warm up: imports and caches
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
failures = []
for expression in json.load(sys.stdin):
    try:
        evaluate(expression, variables)
        failures.append(expression[:60])
    except ExpressionError:
        pass
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown_kb": after - before, "not_refused": failures}))
"""
    expressions = [corpus_expression(expression) for expression, _ in CORPUS]
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(expressions), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["not_refused"] == []
    assert report["grown_kb"] < 50 * 1024


def test_a_long_computation_stops_at_the_deadline() -> None:
    work = "len([x for x in 'ab' * 5000 if x.upper().lower().strip().upper().lower() == 'a'])"
    started = time.thread_time()
    with pytest.raises(ExpressionError, match=r"took longer than 5 ms \(the time limit of an expression\)"):
        run(work, timeout_s=0.005)
    assert time.thread_time() - started < SLOW
    assert run(work, timeout_s=30) == 5000  # the same work, given the time
    heavier = "[x for x in 'ab' * 49999 if x.upper() == 'A' and x.lower() == 'a' and x.strip() + x + x == 'aaa']"
    started = time.thread_time()
    with pytest.raises(ExpressionError, match="took longer than 50 ms"):
        run(heavier)  # the default limit
    assert time.thread_time() - started < SLOW


# Multiples of 2**61-1 all hash to 0; -1 and -2 both hash to -2, so tuples of them collide by the thousand.
ONE_HASH = 2**61 - 1
COLLIDING = {
    "a set comprehension": "len({x * 2305843009213693951 for x in state.numbers})",
    "a dict comprehension": "len({x * 2305843009213693951: 1 for x in state.numbers})",
    "tuples of -1 and -2": "len({(a, b, c, d, e, f, g, h) for a in state.pm for b in state.pm for c in state.pm "
    "for d in state.pm for e in state.pm for f in state.pm for g in state.pm for h in state.pm})",
    "the union of two sets": "len({x for x in state.low} | {x for x in state.high})",
    "a dict merged into another": "len({x: 0 for x in state.low} | {x: 1 for x in state.high})",
}


@pytest.mark.parametrize("expression", COLLIDING.values(), ids=COLLIDING.keys())
def test_sets_of_one_hash_value_are_refused_before_they_cost_quadratic_time(expression: str) -> None:
    """Building a set of n distinct items of one hash costs n² comparisons in one C call the clock cannot stop:
    20,000 such integers took seconds of CPU. Sets and dicts are now built item by item, counting hash chains."""
    state = {
        "numbers": list(range(20_000)),
        "pm": [-1, -2],
        "low": [i * ONE_HASH for i in range(40)],
        "high": [i * ONE_HASH for i in range(40, 80)],
    }
    started = time.thread_time()
    with pytest.raises(ExpressionError, match="over 64 different items of one hash value"):
        run(expression, state, timeout_s=30)  # a generous deadline: the chain limit, not the clock, refuses
    assert time.thread_time() - started < SLOW
    started = time.thread_time()
    with pytest.raises(ExpressionError):
        run(expression, state)  # and at the default deadline, it stays within it
    assert time.thread_time() - started < SLOW


def test_sets_and_dicts_of_ordinary_values_are_unaffected() -> None:
    state = {"numbers": list(range(3_000)), "few": [i * ONE_HASH for i in range(64)]}
    assert run("len({x * 7 for x in state.numbers})", state, timeout_s=5) == 3_000
    assert run("len({str(x): x for x in state.numbers})", state, timeout_s=5) == 3_000
    assert run("len({x for x in state.few})", state) == 64  # up to the limit, colliding items are fine
    assert run("len({x for x in state.few + state.few})", state) == 64  # duplicates are not new items
    assert run("{1, 1.0, True}") == {1}
    assert run("{'a': 1, 'a': 2}") == {"a": 2}
    assert run("sorted({3, 1, 2} | {4})") == [1, 2, 3, 4]


def test_bounded_work_near_the_limits_succeeds() -> None:
    assert run("len('a' * 100000)") == MAX_SIZE
    assert run("len(('ab' * 50000).replace('a', 'c'))") == MAX_SIZE
    assert run("len([0] * 100000)") == MAX_SIZE
    assert run("len(sorted('ba' * 49000))", timeout_s=5) == 98000
    assert run("len(str([10 ** 300] * 10))") > 3000
    assert run("len(('x' * 99999).split('x'))", timeout_s=5) == 100000


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        run("1", timeout_s=0)


# --- static_problem -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("state.x >", "expression_syntax"),
        ("   ", "expression_syntax"),
        ("x\x00", "expression_syntax"),
        ("x\ud800", "expression_syntax"),
        ("'\\d'", None),  # an invalid escape warns in Python; the tree is fine
        ("(" * 300 + ")" * 300, "expression_syntax"),
        ("1" * 5000, "expression_syntax"),  # Python's 4300-digit literal limit
        ("x" * (MAX_EXPRESSION_CHARS + 1), "expression_too_long"),
        ("not " * 200 + "state", "expression_too_deep"),
        ("1+" * 4_999 + "1", "expression_too_deep"),
        ("-" * 9_999 + "1", "expression_too_deep"),
        ("(lambda: 1)", "expression_forbidden"),
        ("(y := 1)", "expression_forbidden"),
        ("state.__class__", "expression_forbidden"),
        ("__builtins__", "expression_forbidden"),
        ("_", "expression_unknown_name"),
        ("[_ for _ in state.x]", None),
        ("state.x.format()", "expression_forbidden"),
        ("sorted(state.x, key=1)", "expression_forbidden"),
        ("sorted(state.x, reverse=True)", None),
        ("min(state.x, default=None)", None),
        ("f'{state.x!r}'", "expression_forbidden"),
        ("f'{state.x!s} and {state.y}'", None),
        ("print", "expression_unknown_name"),
        ("print(1)", "expression_unknown_name"),
        ("contact.name.strip().title()", None),
        ("now", None),
        ("state.x is 1", None),  # a SyntaxWarning from the compiler, not from the parser
    ],
)
def test_static_problem_codes(expression: str, code: str | None) -> None:
    problem = static_problem(expression, RULE_NAMES)
    assert (problem[0] if problem else None) == code, problem


def test_static_problem_for_the_corpus_matches_evaluate() -> None:
    """What validation refuses, the engine refuses with the same words (and vice versa for static problems)."""
    for expression, _ in CORPUS:
        text = corpus_expression(expression)
        problem = static_problem(text, RULE_NAMES)
        if problem is not None:
            with pytest.raises(ExpressionError) as caught:
                run(text)
            assert str(caught.value) == f"the expression {problem[1]}"


def test_one_depth_limit() -> None:
    assert VALIDATION_DEPTH == MAX_EXPRESSION_DEPTH
    deepest_ok = "(" * 45 + "state.x" + " + 1)" * 45  # two tree levels a parenthesis
    assert static_problem(deepest_ok, RULE_NAMES) is None
    assert run(deepest_ok, state={"x": 1}) == 46


def test_the_allowlists_name_no_private_or_mutating_method() -> None:
    assert not any(name.startswith("_") for name in (*METHODS, *HELPERS))
    mutating = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "sort", "reverse"}
    assert not METHODS & mutating
    assert {"format", "format_map", "encode", "expandtabs", "translate", "maketrans"}.isdisjoint(METHODS)


def test_parsing_from_many_threads_at_once() -> None:
    """Every ast.parse holds the sandbox's lock (CPython 3.11.7, gh-106905): many threads, fresh expressions."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(200):
                expression = f"[x + {worker * 1000 + i} for x in [1, 2]] + [len(contact.tags)]"
                assert evaluate(expression, {"contact": sample_contact()}) == [
                    1 + worker * 1000 + i,
                    2 + worker * 1000 + i,
                    2,
                ]
                assert static_problem(f"state.x{worker}_{i} > 1", RULE_NAMES) is None
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- properties -----------------------------------------------------------------------------------------------

LEAVES = st.sampled_from(
    [
        *("state", "contact", "now", "x", "state.calls", "state.door_notes", "state.answers", "state['items']"),
        *("contact.tags", "contact.metadata", "state.missing", "'a'", "'ab c'", "''", "0", "1", "-1", "2", "7"),
        *("99999", "10 ** 6", "1e308", "0.5", "True", "None", "[]", "{}", "[1, 'a']", "{'k': [1]}", "(1,)"),
    ]
)
BINARY = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "==", "<", ">=", "in", "not in", "is"]
BINARY += ["and", "or"]


def _expressions(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(children, children)
    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "not ", "~"]), children).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(st.sampled_from(sorted(HELPERS)), st.lists(children, max_size=2)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        st.tuples(children, st.sampled_from(sorted(METHODS)), st.lists(children, max_size=2)).map(
            lambda t: f"({t[0]}).{t[1]}({', '.join(t[2])})"
        ),
        st.tuples(children, st.sampled_from(["x", "tags", "year", "get", "__class__", "gi_frame"])).map(
            lambda t: f"({t[0]}).{t[1]}"
        ),
        pair.map(lambda t: f"({t[0]})[{t[1]}]"),
        pair.map(lambda t: f"({t[0]})[{t[1]}:]"),
        st.lists(children, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
        pair.map(lambda t: f"[{t[0]} for x in {t[1]}]"),
        pair.map(lambda t: f"{{{t[0]}: x for x in {t[1]}}}"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        LEAVES.map(lambda leaf: f'f"<{{{leaf}}}>"'),
    )


EXPRESSIONS = st.recursive(LEAVES, _expressions, max_leaves=10)
ALLOWED_RESULTS = (type(None), bool, int, float, str, list, tuple, dict, set, datetime, timedelta)


@settings(max_examples=400, deadline=None, database=None)
@given(expression=EXPRESSIONS)
def test_random_expressions_either_run_or_fail_cleanly(expression: str) -> None:
    started = time.thread_time()
    problem = static_problem(expression, RULE_NAMES)
    error: ExpressionError | None = None
    try:
        value = run(expression)
    except ExpressionError as exc:  # the only exception evaluate may raise
        error = exc
    assert time.thread_time() - started < SLOW
    if error is None:
        assert problem is None
        assert isinstance(value, ALLOWED_RESULTS)
    else:
        assert str(error)
        assert problem is None or str(error) == f"the expression {problem[1]}"


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(max_size=200) | st.text(alphabet="()[]{}.,:'\"_ab01+*=<>!\\\x00\ud800 ", max_size=300))
def test_static_problem_never_raises(text: str) -> None:
    problem = static_problem(text, RULE_NAMES)
    assert problem is None or (problem[0].startswith("expression_") and problem[1])


def _nested(depth: int) -> Iterator[str]:
    for opener, closer in (("(", ")"), ("[", "]"), ("{", "}"), ("not (", ")"), ("-(", ")")):
        yield opener * depth + "1" + closer * depth


@pytest.mark.parametrize("expression", [*_nested(99), *_nested(300), *_nested(3000)])
def test_deep_nesting_never_raises(expression: str) -> None:
    problem = static_problem(expression, RULE_NAMES)
    assert problem is None or problem[0] in ("expression_syntax", "expression_too_deep", "expression_too_long")
    if problem is not None:
        with pytest.raises(ExpressionError):
            run(expression)
