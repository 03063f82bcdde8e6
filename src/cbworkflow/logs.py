"""The server's logs: one JSON object per line on stderr (`CBW_LOG_FORMAT=json`, the default) or readable text.

Every line has `ts` (ISO 8601, UTC), `level`, `logger` and `message`; inside a request also `request_id` (set by
`api/request_log.py`); the `extra={...}` fields of the call; and, for an exception, its traceback as one string in
`exc_info`. uvicorn's own loggers go through the same handler, so nothing the server writes is in another shape.
Callers never pass secrets (tokens, Authorization headers, bodies) to a log call: the formatter cannot tell them.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

# The id of the request being served, for every line logged while serving it (set by api/request_log.py).
request_id: ContextVar[str | None] = ContextVar("cbw_request_id", default=None)

# The attributes every LogRecord has: anything else on a record came from `extra=` and is written as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_DROPPED = frozenset({"color_message"})  # uvicorn's copy of the message with terminal colours
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            out["request_id"] = current
        for key, value in _extra(record).items():
            out.setdefault(key, value)  # an extra field never overwrites the fields above
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or not c.isprintable() or c in '"=' for c in text):
        return json.dumps(text)  # quoted and escaped: a value cannot start a fake line
    return text


class TextFormatter(logging.Formatter):
    """For a person at a terminal: `ts LEVEL logger [request id] message key=value ...` (+ the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<7}", record.name]
        current = request_id.get()
        if current is not None:
            parts.append(f"[{current}]")
        parts.append(record.getMessage().replace("\n", "\\n"))
        parts.extend(f"{key}={_text_value(value)}" for key, value in _extra(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure(level: str = "INFO", log_format: LogFormat = "json") -> None:
    """Send every logger of the process (cbworkflow's, uvicorn's, libraries') to stderr in `log_format`.

    Replaces the root logger's handlers: this is for the server process, which owns its stderr.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _UVICORN:  # no handlers of their own: they propagate to ours
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
