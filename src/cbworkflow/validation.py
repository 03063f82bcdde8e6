"""Validation of a workflow template: what stops a draft from running, in words a campaign organiser reads.

Templates may be saved while broken (drafts), so the models only enforce the JSON shape; this module is the
one place that judges the graph and the node settings. It is pure and linear in the template's size
(iterative BFS, size-capped parsers) so the API can run it on every save and every instance create.

| code                      | level | what is wrong                                                    |
|---------------------------|-------|------------------------------------------------------------------|
| no_nodes                  | error | the template has no nodes                                        |
| start_node_missing        | error | `start_node` is not set                                          |
| start_node_unknown        | error | `start_node` names no node of the template                       |
| invalid_node_id           | error | a node id is not a slug                                          |
| invalid_outcome           | error | an outcome (transition key) is not a slug                        |
| unknown_transition_target | error | a transition leads to a node that does not exist                 |
| dead_end                  | error | a node that is not an end node has no transitions                |
| end_has_transitions       | error | an end node has transitions (they could never be taken)          |
| end_status_invalid        | error | an end node's `end_status` is not a slug                         |
| action_missing            | error | an action node has no (or a blank) `action`                      |
| rule_missing              | error | a decision node has no `rule`                                    |
| rule_invalid              | error | the `rule` is not a valid heuristic, ai or manual rule           |
| fallback_unknown          | error | an AI rule's `fallback` is not an outcome of its node            |
| expression_too_long       | error | a heuristic expression is over 10,000 characters                 |
| expression_too_deep       | error | a heuristic expression nests deeper than the sandbox allows      |
| expression_syntax         | error | a heuristic expression does not parse                            |
| expression_forbidden      | error | it uses what the sandbox refuses: a lambda, a `_private` name, a |
|                           |       | method or keyword that is not allowed, a bytes literal...        |
| expression_unknown_name   | error | it names a variable or calls a function that does not exist      |
| wait_condition_missing    | error | a wait node has no `wait_condition`                              |
| wait_condition_invalid    | error | bad wait type, duration, until time, event name or timeout       |
| wait_outcome_missing      | error | a wait has no transition for an outcome its condition fires      |
| webhook_url_invalid       | error | a webhook URL is missing, not http(s), or one the worker refuses |
|                           |       | (`urls.check_url`), or its host comes from a placeholder         |
| webhook_method_invalid    | error | the webhook method is not GET, POST, PUT, PATCH or DELETE        |
| webhook_limits_invalid    | error | `timeout_s` is not above 0 or `max_attempts` is below 1          |
| trigger_invalid           | error | a trigger lacks its `tag`/`event`, or its `where` cannot run     |
|                           |       | (any expression problem above, over `contact`, `event`, `now`)   |
| goal_invalid              | error | a goal's id is used twice, it lacks its `tag`/`event`, or its    |
|                           |       | `where` cannot run                                               |
| split_weights_mismatch    | error | a split's `weights` do not name exactly its outcomes             |
| retry_invalid             | error | an action's `retry` names an outcome it does not have, or its    |
|                           |       | `after` is not a duration                                        |
| emit_event_invalid        | error | an `emit_event` action's `action_config` is not `{"event",       |
|                           |       | "data"?, "to"?}`, or the node has no `sent` transition           |
| unreachable               | warn  | the node cannot be reached from the start node                   |
| no_path_to_end            | warn  | from this reachable node no end node can be reached              |
| ai_no_fallback            | warn  | an AI decision has no `fallback`: failures wait for a person     |
| wait_outcome_unknown      | warn  | a wait outcome its condition never fires (only a person can)     |
| webhook_outcome_missing   | warn  | a webhook node has no `success` or no `failure` transition       |
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from pydantic import TypeAdapter, ValidationError

from .engine.render import render_url
from .engine.sandbox import MAX_EXPRESSION_CHARS as MAX_EXPRESSION_CHARS  # one limit, shared with the sandbox
from .engine.sandbox import MAX_EXPRESSION_DEPTH as MAX_EXPRESSION_DEPTH
from .engine.sandbox import RULE_NAMES, TRIGGER_NAMES, static_problem
from .ids import SLUG_RE
from .models.templates import (
    EMIT_EVENT,
    ActionNode,
    AIRule,
    DecisionNode,
    EmitEventConfig,
    EndNode,
    Goal,
    HeuristicRule,
    ManualRule,
    Node,
    Rule,
    SplitNode,
    Trigger,
    ValidationItem,
    ValidationReport,
    WaitNode,
    WebhookNode,
)
from .times import is_until
from .times import parse_duration as parse_duration  # re-exported: validation's own callers
from .urls import UrlError, UrlSchemeError, check_url
from .urls import host_from_placeholder as host_from_placeholder  # re-exported: the worker refuses the same

WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

_RULE_ADAPTER: TypeAdapter[HeuristicRule | AIRule | ManualRule] = TypeAdapter(Rule)
_PLACEHOLDER = re.compile(r"\{(?:state|contact)(?:\.[A-Za-z0-9_-]+)+\}")
_WAIT_FIELDS = {
    "duration": {"type", "duration"},
    "until": {"type", "until"},
    "event": {"type", "event", "timeout"},
}
_UNTIL_HINT = "a date and time with offset like 2026-11-03T08:00:00-05:00, or a {state.x} placeholder"


def expression_problem(expression: str, names: Iterable[str] = RULE_NAMES) -> tuple[str, str] | None:
    """(code, detail) when an expression cannot run with `names` in scope, else None; never raises.

    The sandbox's own check (engine/sandbox.py), so what validation accepts is what the engine runs: a heuristic
    rule sees `state`, `contact` and `now`; a trigger's `where` sees `contact`, `event` and `now`.
    """
    return static_problem(expression, names)


def _q(text: str, limit: int = 60) -> str:
    """Quote user text for a message, cut short so a huge value cannot flood the report."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _label(node_id: str, node: object = None) -> str:
    """How messages name a node: its display name when it has one, and always its id."""
    name = getattr(node, "name", None)
    if isinstance(name, str) and name.strip():
        return f"Node {_q(name.strip())} ({_q(node_id)})"
    return f"Node {_q(node_id)}"


def _rule_errors(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors(include_url=False, include_input=False)[:4]:
        loc = [str(p) for p in err["loc"]]
        field, kind = _q(".".join(loc[1:])), err["type"]  # pydantic puts the union tag first
        if kind in ("union_tag_not_found", "union_tag_invalid"):
            parts.append('its "type" must be heuristic, ai or manual')
        elif kind == "missing":
            parts.append(f"{field} is required")
        elif kind == "extra_forbidden":
            parts.append(f"{field} is not a setting of a {loc[0]} rule")
        else:
            parts.append(f"{field}: {err['msg'][:1].lower()}{err['msg'][1:]}")
    return "; ".join(parts)


def _wait_problem(cond: Mapping[str, object]) -> str | None:
    kind = cond.get("type")
    if not isinstance(kind, str) or kind not in _WAIT_FIELDS:
        return 'its "type" must be duration, until or event'
    if extra := sorted(str(k) for k in cond if k not in _WAIT_FIELDS[kind]):
        return f"{_q(extra[0])} is not a setting of a {kind} wait"
    if kind == "event":
        event = cond.get("event")
        if not isinstance(event, str) or not event.strip():
            return '"event" must name the event to wait for, like rsvp_received'
    if kind == "until":
        until = cond.get("until")
        ok = isinstance(until, str) and is_until(until.strip(), _PLACEHOLDER)
        return None if ok else f'"until" must be {_UNTIL_HINT}'
    key = "duration" if kind == "duration" else "timeout"
    value = cond.get(key)
    if value is None and kind == "event":
        return None
    if not isinstance(value, str):
        return f'"{key}" must be a duration such as P3D or 2h'
    try:
        parse_duration(value)
    except ValueError as exc:
        return f'"{key}" is not valid: {exc}'
    return None


def _url_problem(url: str | None) -> str | None:
    """Why a webhook URL can never be called, or None. The check is the one the outbound client makes before each
    call (`urls.check_url`), applied to the URL with its placeholders filled as empty values: a filled value is
    percent-encoded into its path segment or query value, so no value can make a URL valid or invalid."""
    if url is None or not url.strip():
        return "has no webhook_url: set the http(s) address to call"
    if host_from_placeholder(url):
        return f"has a webhook_url whose host comes from a placeholder ({_q(url)}); only its path and query may"
    try:
        check_url(render_url(url, {}))
    except UrlSchemeError:
        return f"has a webhook_url that is not http or https ({_q(url)})"
    except UrlError as exc:
        return f"has a webhook_url that cannot be called ({_q(url)}): {exc.reason}"
    return None


_WARNINGS = frozenset(
    {"unreachable", "no_path_to_end", "ai_no_fallback", "wait_outcome_unknown", "webhook_outcome_missing"}
)


class _Report:
    """Collects items for one node (or the template, node=None); the code decides error or warning."""

    def __init__(self) -> None:
        self.errors: list[ValidationItem] = []
        self.warnings: list[ValidationItem] = []
        self.node: str | None = None

    def __call__(self, code: str, message: str) -> None:
        items = self.warnings if code in _WARNINGS else self.errors
        # model_construct: the fields are plain strings we build, and validating thousands of items costs ms.
        items.append(ValidationItem.model_construct(code=code, node=self.node, message=message))


def _check_node(add: _Report, nid: str, n: str, node: Node, nodes: Mapping[str, Node]) -> None:
    """Everything that can be said about one node (labelled `n` in messages) without walking the graph."""
    if not SLUG_RE.fullmatch(nid):
        add("invalid_node_id", f"{n} has an invalid id: use 1-64 lowercase letters, digits, - or _.")
    for outcome, target in node.transitions.items():
        if not SLUG_RE.fullmatch(outcome):
            add("invalid_outcome", f"{n} has an invalid outcome name {_q(outcome)}: use a slug.")
        if target not in nodes:
            msg = f"{n}: outcome {_q(outcome)} leads to {_q(target)}, which is not a node of this template."
            add("unknown_transition_target", msg)
    if isinstance(node, EndNode):
        if node.transitions:
            add("end_has_transitions", f"{n} is an end node but has transitions: remove them.")
        if not SLUG_RE.fullmatch(node.end_status):
            add("end_status_invalid", f"{n} has end_status {_q(node.end_status)}: use a slug.")
        return
    if not node.transitions:
        add("dead_end", f"{n} has no transitions: add an outcome leading on, or make it an end node.")
    if isinstance(node, ActionNode) and node.retry is not None:
        _check_retry(add, node, n)
    if isinstance(node, ActionNode) and not (node.action and node.action.strip()):
        add("action_missing", f"{n} does not say which action to take (e.g. phone_call or sms).")
    elif isinstance(node, ActionNode) and node.action == EMIT_EVENT:
        _check_emit_event(add, node, n)
    elif isinstance(node, DecisionNode):
        _check_decision(add, node, n)
    elif isinstance(node, WaitNode):
        _check_wait(add, node, n)
    elif isinstance(node, SplitNode) and set(node.weights) != set(node.transitions):
        msg = (
            f"{n} is a split whose weights ({_names(node.weights)}) are not its outcomes ({_names(node.transitions)})."
        )
        add("split_weights_mismatch", msg)
    elif isinstance(node, WebhookNode):
        if problem := _url_problem(node.webhook_url):
            add("webhook_url_invalid", f"{n} {problem}.")
        if node.webhook_method not in WEBHOOK_METHODS:
            msg = f"{n} has method {_q(node.webhook_method)}: use one of {', '.join(WEBHOOK_METHODS)}."
            add("webhook_method_invalid", msg)
        if not (math.isfinite(node.timeout_s) and node.timeout_s > 0) or node.max_attempts < 1:
            add("webhook_limits_invalid", f"{n} needs timeout_s above 0 and max_attempts of 1 or more.")
        if missing := [o for o in ("success", "failure") if o not in node.transitions]:
            msg = f"{n} has no {' or '.join(missing)} transition: a call ending so fails the instance."
            add("webhook_outcome_missing", msg)


def _check_retry(add: _Report, node: ActionNode, n: str) -> None:
    assert node.retry is not None
    if unknown := [o for o in node.retry.outcomes if o not in node.transitions]:
        add("retry_invalid", f"{n} tries again on {_names(unknown)}, which are not its outcomes.")
    try:
        parse_duration(node.retry.after)
    except ValueError as exc:
        add("retry_invalid", f"{n} has a retry whose after is not a duration: {exc}.")


def _names(keys: Iterable[str]) -> str:
    return ", ".join(sorted(keys)) or "none"


def _check_decision(add: _Report, node: DecisionNode, n: str) -> None:
    if node.rule is None:
        add("rule_missing", f"{n} is a decision with no rule: add a heuristic, ai or manual rule.")
        return
    try:
        rule = _RULE_ADAPTER.validate_python(node.rule)
    except ValidationError as exc:
        add("rule_invalid", f"{n} has a rule that is not valid: {_rule_errors(exc)}.")
        return
    if isinstance(rule, HeuristicRule) and (problem := expression_problem(rule.expression)):
        add(problem[0], f"{n} has an expression that {problem[1]}.")
    elif isinstance(rule, AIRule) and rule.fallback is None:
        msg = f"{n} has no fallback: when the AI fails, instances wait for a person to decide."
        add("ai_no_fallback", msg)
    elif isinstance(rule, AIRule) and rule.fallback not in node.transitions:
        msg = f"{n} falls back to {_q(str(rule.fallback))}, which is not one of its outcomes."
        add("fallback_unknown", msg)


def _check_wait(add: _Report, node: WaitNode, n: str) -> None:
    cond = node.wait_condition
    if cond is None:
        msg = f"{n} is a wait with no wait_condition: say how long to wait, or for which event."
        add("wait_condition_missing", msg)
        return
    if problem := _wait_problem(cond):
        add("wait_condition_invalid", f"{n} has a wait condition that is not valid: {problem}.")
    kind = cond.get("type")
    if not isinstance(kind, str) or kind not in _WAIT_FIELDS:
        return
    fires = ["elapsed"]
    if kind == "event":
        fires = ["received"] if cond.get("timeout") is None else ["received", "timeout"]
    for outcome in fires:
        if outcome not in node.transitions:
            add("wait_outcome_missing", f"{n} needs a transition for outcome {_q(outcome)}.")
    for outcome in node.transitions:
        if outcome not in fires:
            add("wait_outcome_unknown", f"{n}: its {kind} wait never fires {_q(outcome)}; only a person can.")


def _check_emit_event(add: _Report, node: ActionNode, n: str) -> None:
    try:
        EmitEventConfig.model_validate(node.action_config)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False, include_input=False)[:3]:
            field = ".".join(str(p) for p in err["loc"]) or "action_config"
            if err["type"] == "extra_forbidden":
                parts.append(f"{_q(field)} is not a setting of emit_event (event, data, to)")
            elif err["type"] == "missing":
                parts.append(f"{_q(field)} is required: the name of the event to raise")
            else:
                parts.append(f"{_q(field)}: {err['msg'][:1].lower()}{err['msg'][1:]}")
        add("emit_event_invalid", f"{n} has an emit_event action_config that is not valid: {'; '.join(parts)}.")
    if "sent" not in node.transitions:
        add("emit_event_invalid", f"{n} raises an event and goes on with outcome 'sent': add a 'sent' transition.")


def _check_goals(add: _Report, goals: Sequence[Goal]) -> None:
    seen: set[str] = set()
    for goal in goals:
        g = f"Goal {_q(goal.id)} ({goal.on})"
        if goal.id in seen:
            add("goal_invalid", f"{g}: another goal has this id; goal ids must be unique in the template.")
        seen.add(goal.id)
        if goal.on == "tag_added" and not goal.tag:
            add("goal_invalid", f"{g} needs the tag that reaches it.")
        if goal.on == "event" and not (goal.event and goal.event.strip()):
            add("goal_invalid", f"{g} needs the name of the event that reaches it.")
        if goal.where is not None and (problem := expression_problem(goal.where, TRIGGER_NAMES)):
            add("goal_invalid", f"{g} has a where expression that {problem[1]}.")


def _check_triggers(add: _Report, triggers: Sequence[Trigger]) -> None:
    for number, trigger in enumerate(triggers, start=1):
        t = f"Trigger {number} ({trigger.on})"
        if trigger.on == "tag_added" and not trigger.tag:
            add("trigger_invalid", f"{t} needs the tag that starts it.")
        if trigger.on == "event" and not (trigger.event and trigger.event.strip()):
            add("trigger_invalid", f"{t} needs the name of the event that starts it.")
        if trigger.where is not None and (problem := expression_problem(trigger.where, TRIGGER_NAMES)):
            add("trigger_invalid", f"{t} has a where expression that {problem[1]}.")


def _walk(starts: Iterable[str], edges: Mapping[str, list[str]]) -> set[str]:
    """Every node reachable from any of `starts` (multi-source BFS: linear however many sources)."""
    seen = set(starts)
    queue = deque(seen)
    while queue:
        for nxt in edges.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def validate_template(
    start_node: str | None, nodes: Mapping[str, Node], triggers: Sequence[Trigger] = (), goals: Sequence[Goal] = ()
) -> ValidationReport:
    """All problems of a template, ordered by node (template-wide first, then template order), then code."""
    add = _Report()
    if not nodes:
        add("no_nodes", "The template has no nodes: add at least a first step and an end node.")
    if start_node is None or not start_node.strip():
        add("start_node_missing", "The template has no start_node: name the node instances begin at.")
    elif nodes and start_node not in nodes:
        add("start_node_unknown", f"The start_node {_q(start_node)} is not a node of this template.")
    _check_triggers(add, triggers)
    _check_goals(add, goals)
    labels = {nid: _label(nid, node) for nid, node in nodes.items()}
    for nid, node in nodes.items():
        add.node = nid
        _check_node(add, nid, labels[nid], node, nodes)

    # Transitions of end nodes never fire and unknown targets are errors above: neither is followed.
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {nid: [] for nid in nodes}
    for nid, node in nodes.items():
        if not isinstance(node, EndNode):
            forward[nid] = [t for t in dict.fromkeys(node.transitions.values()) if t in nodes]
            for target in forward[nid]:
                backward[target].append(nid)
    # Without a valid start every node counts as reachable, so a loop with no way out is still reported.
    reachable = _walk([start_node], forward) if start_node is not None and start_node in nodes else set(nodes)
    finishing = _walk([nid for nid, node in nodes.items() if isinstance(node, EndNode)], backward)
    for nid, node in nodes.items():
        add.node = nid
        if nid not in reachable:
            add("unreachable", f"{labels[nid]} cannot be reached from the start node.")
        elif nid not in finishing and node.transitions:  # without transitions it is a dead_end error
            msg = f"{labels[nid]} never leads to an end node: instances that get there never finish."
            add("no_path_to_end", msg)

    order = {nid: index for index, nid in enumerate(nodes)}

    def key(item: ValidationItem) -> tuple[int, str]:
        return (-1 if item.node is None else order.get(item.node, len(order)), item.code)

    errors, warnings = sorted(add.errors, key=key), sorted(add.warnings, key=key)
    return ValidationReport(valid=not errors, errors=errors, warnings=warnings)
