"""A local fake of Anthropic's Messages API (`POST /v1/messages`) for tests: real HTTP on 127.0.0.1, no internet.

It answers what the official `anthropic` SDK expects: a Message (`id`, `type: "message"`, `role`, `model`,
`content` blocks, `stop_reason`, `stop_sequence`, `usage`) or an error body
(`{"type": "error", "error": {"type": "rate_limit_error", "message": ...}}`) with its status and `retry-after`.
Only the standard library is used, so the standalone mode starts in milliseconds.

In-process, in tests::

    with FakeAnthropic() as fake:                   # a free port on 127.0.0.1, served from a thread
        fake.script(rate_limited(retry_after=2), tool_use("yes", "they asked for a call"))
        decider = AIDecider(api_key="sk-test", model="m", base_url=fake.base_url, ...)
        ...
        fake.requests[0].body["tool_choice"]         # every request received: path, headers, JSON body

Each request takes the next scripted reply (`tool_use`, `tool_input`, `text_only`, `refusal`, `cut_off`,
`api_error`, `rate_limited`, `overloaded`, `server_error`, `slow`); once the script is used up, the markers in the
prompt decide, as in the standalone mode. `api_key=` makes every request with another key a 401 (the key is
read from `x-api-key` or `Authorization: Bearer`, which is what SDK 2.x sends).

Standalone, for end-to-end tests (a `cbworkflow serve` process pointed at it with `CBW_AI_BASE_URL`)::

    python tests/fake_anthropic.py --port 8765      # --port 0 picks a free one; prints the URL on its first line

Markers in the prompt (the text of the user messages) choose the behaviour; several combine:

    (no marker)            call the tool with the first allowed outcome (the request's enum), reason "default"
    [fake:outcome=X]       call the tool with outcome X (X need not be allowed: that tests the client's check)
    [fake:reason=TEXT]     the reason given with the outcome
    [fake:bad_outcome]     call the tool with outcome "maybe", which no node should allow
    [fake:bad_input]       call the tool with an input that is not an object (a string)
    [fake:no_outcome]      call the tool with an input without "outcome"
    [fake:no_tool]         answer in text only (stop_reason "end_turn"), no tool call
    [fake:refusal]         stop_reason "refusal", no tool call
    [fake:max_tokens]      stop_reason "max_tokens", the tool call cut off
    [fake:429]             answer that HTTP error, every time; any status works: [fake:400] [fake:401] [fake:403]
                           [fake:404] [fake:500] [fake:502] [fake:503] [fake:529] ...
    [fake:500x2]           that error for the first 2 requests with this prompt text, then answer normally
                           (counted per distinct prompt text, for the server's life)
    [fake:retry_after=S]   the retry-after header sent with errors (seconds); default 1 for 429 and 529, else none
    [fake:slow=S]          wait S seconds before answering

Every answer reports `usage` of 25 input and 10 output tokens unless a scripted reply says otherwise.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_INPUT_TOKENS = 25
DEFAULT_OUTPUT_TOKENS = 10

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One canned answer. `content=None` on a 200: call the request's tool with its first allowed outcome."""

    status: int = 200
    content: list[dict[str, Any]] | None = None
    stop_reason: str = "tool_use"
    default_reason: str = "default"
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS


def _tool_block(name: str, value: object) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_fake", "name": name, "input": value}


def tool_use(
    outcome: str,
    reason: str = "fake reason",
    *,
    tool: str = "",
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> Reply:
    """Call the tool (the request's, unless `tool` names another) with this outcome and reason.

    Any other reply's token counts can be set with `dataclasses.replace(reply, input_tokens=...)`.
    """
    value = {"outcome": outcome, "reason": reason}
    return Reply(content=[_tool_block(tool, value)], input_tokens=input_tokens, output_tokens=output_tokens)


def tool_input(value: object) -> Reply:
    """Call the tool with any input at all (not an object, no outcome, an outcome of the wrong type...)."""
    return Reply(content=[_tool_block("", value)])


def text_only(
    text: str = "I would say yes.",
) -> Reply:
    return Reply(content=[{"type": "text", "text": text}], stop_reason="end_turn")


def refusal() -> Reply:
    return Reply(content=[], stop_reason="refusal")


def cut_off(
    outcome: str | None = None,
) -> Reply:
    """stop_reason "max_tokens": a tool call whose reason was cut short (the outcome may even look fine)."""
    value: dict[str, object] = {"reason": "Because the"}
    if outcome is not None:
        value = {"outcome": outcome, **value}
    return Reply(content=[_tool_block("", value)], stop_reason="max_tokens")


def api_error(
    status: int,
    message: str = "",
    *,
    error_type: str = "",
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An HTTP error with Anthropic's error body; `retry_after` (seconds) and `retry_after_ms` set those headers."""
    sent = dict(headers or {})
    if retry_after is not None:
        sent["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        sent["retry-after-ms"] = f"{retry_after_ms:g}"
    kind = error_type or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return Reply(status=status, error_type=kind, message=message or f"fake {kind}", headers=sent)


def rate_limited(retry_after: float | None = 1, *, retry_after_ms: float | None = None) -> Reply:
    message = "Number of requests has exceeded your rate limit"
    return api_error(429, message, retry_after=retry_after, retry_after_ms=retry_after_ms)


def overloaded(retry_after: float | None = None) -> Reply:
    return api_error(529, "Overloaded", retry_after=retry_after)


def server_error(status: int = 500, retry_after: float | None = None) -> Reply:
    return api_error(status, "Internal server error", retry_after=retry_after)


def slow(seconds: float, then: Reply | None = None) -> Reply:
    """Wait before answering (`then`, default: the first allowed outcome)."""
    return replace(then or Reply(), delay_s=seconds)


@dataclass(frozen=True)
class Received:
    """One request the fake received. Header names are lowercase."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return user_text(self.body)

    @property
    def outcomes(self) -> list[str]:
        return allowed_outcomes(self.body)

    @property
    def api_key(self) -> str | None:
        """The key sent: `x-api-key`, or `Authorization: Bearer` (what SDK 2.x sends), else None."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def user_text(body: dict[str, Any]) -> str:
    """The text of the request's user messages, joined by newlines."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return "\n".join(parts)


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []


def tool_name(body: dict[str, Any]) -> str:
    """The tool the request forces (tool_choice), else its first tool's name."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    tools = _tools(body)
    return str(tools[0].get("name", "tool")) if tools else "tool"


def allowed_outcomes(body: dict[str, Any]) -> list[str]:
    """The enum of the forced tool's `outcome` property ([] when the request has none)."""
    name = tool_name(body)
    for tool in _tools(body):
        if tool.get("name") != name:
            continue
        try:
            enum = tool["input_schema"]["properties"]["outcome"]["enum"]
        except (KeyError, TypeError):
            return []
        return [str(v) for v in enum] if isinstance(enum, list) else []
    return []


_MARKER = re.compile(r"\[fake:([^\]]*)\]")
_STATUS = re.compile(r"(\d{3})(?:x(\d+))?")


def _markers(prompt: str) -> Iterator[tuple[str, str]]:
    for inner in _MARKER.findall(prompt):
        key, _, value = inner.strip().partition("=")
        yield key.strip(), value.strip()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAnthropic

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away (e.g. it timed out on a slow answer): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is dropped after this, so no thread waits forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            sys.stderr.write(f"fake-anthropic: {format % args}\n")

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not self.path.split("?")[0].endswith("/v1/messages"):
            self._send(api_error(404, f"no route {self.path}"), {})
            return
        if not isinstance(body, dict):
            self._send(api_error(400, "the body is not a JSON object"), {})
            return
        received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = fake._record_and_choose(received)
        if reply.delay_s > 0 and fake._stopping.wait(reply.delay_s):
            self.close_connection = True  # the server is closing: leave without an answer
            return
        self._send(reply, body)

    def do_GET(self) -> None:
        self._send(api_error(404, f"no route {self.path}"), {})

    def _send(self, reply: Reply, body: dict[str, Any]) -> None:
        if reply.status == 200:
            payload: dict[str, Any] = self.server.fake._message(reply, body)
        else:
            payload = {"type": "error", "error": {"type": reply.error_type, "message": reply.message}}
        data = json.dumps(payload).encode()
        try:
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_fake_{next(self.server.fake._ids)}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            self.close_connection = True


class FakeAnthropic:
    """The fake Messages API, listening on `host:port` (0: a free port) from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None, verbose: bool = False):
        self.host = host
        self.api_key = api_key
        self.verbose = verbose
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self._received: list[Received] = []
        self._served: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes slow answers
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def script(self, *replies: Reply) -> None:
        """Queue replies: each request takes the next one; then the prompt's markers decide."""
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[Received]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._received.clear()
            self._served.clear()

    def _record_and_choose(self, received: Received) -> Reply:
        with self._lock:
            self._received.append(copy.deepcopy(received))
            if self.api_key is not None and received.api_key != self.api_key:
                return api_error(401, "invalid x-api-key")
            if self._script:
                return self._script.pop(0)
            return self._from_markers(received.prompt)

    def _from_markers(self, prompt: str) -> Reply:
        """The reply the prompt's markers ask for (called with the lock held)."""
        markers = list(_markers(prompt))
        values = {key: value for key, value in markers if value}
        flags = {key for key, value in markers if not value}
        retry_after = float(values["retry_after"]) if "retry_after" in values else None
        delay = float(values.get("slow", 0) or 0)
        for key, _ in markers:
            status = _STATUS.fullmatch(key)
            if not status:
                continue
            code, times = int(status.group(1)), status.group(2)
            if times is not None:
                served = self._served.get((prompt, key), 0)
                if served >= int(times):
                    continue
                self._served[(prompt, key)] = served + 1
            wait = retry_after if retry_after is not None else (1 if code in (429, 529) else None)
            return replace(api_error(code, retry_after=wait), delay_s=delay)
        reason = values.get("reason", "default" if "outcome" not in values else "fake reason")
        if "refusal" in flags:
            reply = refusal()
        elif "max_tokens" in flags:
            reply = cut_off()
        elif "no_tool" in flags:
            reply = text_only()
        elif "bad_input" in flags:
            reply = tool_input("yes")
        elif "no_outcome" in flags:
            reply = tool_input({"reason": reason})
        elif "bad_outcome" in flags:
            reply = tool_use("maybe", reason)
        elif "outcome" in values:
            reply = tool_use(values["outcome"], reason)
        else:
            reply = Reply(default_reason=reason)
        return replace(reply, delay_s=delay)

    def _message(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        name = tool_name(body)
        if reply.content is None:
            outcomes = allowed_outcomes(body)
            content = [_tool_block(name, {"outcome": outcomes[0] if outcomes else "", "reason": reply.default_reason})]
        else:
            content = [dict(b, name=b["name"] or name) if b.get("type") == "tool_use" else b for b in reply.content]
        return {
            "id": f"msg_fake_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model", "")),
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local fake of Anthropic's Messages API (markers: see the source).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the first line)")
    parser.add_argument("--api-key", default=None, help="answer 401 to any other x-api-key")
    parser.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake = FakeAnthropic(args.host, args.port, api_key=args.api_key, verbose=args.verbose).start()
    print(f"fake Anthropic API on {fake.base_url}", flush=True)
    try:
        while not stop.wait(0.05):
            pass
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
