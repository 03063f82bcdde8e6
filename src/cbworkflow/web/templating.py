"""Pages rendered on the server with Jinja2: every value is escaped (autoescape on for every template), so a contact
named `<script>` is shown as a name. Templates and the stylesheet ship inside the package; nothing is fetched from
outside the server."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .auth import WebCaller

environment = Environment(
    loader=PackageLoader("cbworkflow.web", "templates"),
    autoescape=True,  # every template, whatever its name: nothing a user typed is ever markup
    undefined=StrictUndefined,  # a name missing from a page's context is a bug, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(moment: datetime | None, *, seconds: bool = False) -> str:
    """A time as an organiser reads it: `7 Dec 2026, 08:05 UTC` (the store keeps UTC)."""
    if moment is None:
        return ""
    return f"{moment.day} {moment:%b %Y}, {moment:%H:%M{':%S' if seconds else ''}} UTC"


def humanize(name: str) -> str:
    """`no_answer` as a person reads it: `No answer`."""
    text = name.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


environment.filters["humanize"] = humanize
CHANNEL_NAMES = {"sms": "Texts (SMS)", "email": "Email", "phone": "Phone calls", "door": "Door knocks", "mail": "Mail"}


def channel_name(name: object) -> str:
    """A consent channel as the pages name it: `sms` is `Texts (SMS)`."""
    return CHANNEL_NAMES.get(str(name), humanize(str(name)))


environment.filters["channel"] = channel_name


PAGE_HEADERS = {
    "Cache-Control": "no-store",  # pages show personal data: never kept by a shared cache
    # Only this server's own scripts and styles run, even if something slipped past escaping; no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(
    request: Request, template: str, *, caller: WebCaller | None = None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The page `template` for `caller` (None on the sign-in pages). Its server time is kept for the access log and
    the `Server-Timing` header."""
    started = time.perf_counter()
    # `csrf_token` too, for macros: inside a Jinja macro `caller` names the macro's call block, not our caller.
    html = environment.get_template(template).render(
        request=request, caller=caller, csrf_token=caller.csrf_token if caller else "", **context
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response
