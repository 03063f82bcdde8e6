"""Who a page is for, and the checks every form passes: the session cookie, the role, and cross-site request
forgery.

CSRF: every form carries a token, compared in constant time with the session's (the sign-in form, before there is
a session, with a cookie of its own: double submit); and a request whose `Origin` (or, without one, `Referer`)
names another site is refused whatever it carries. The session cookie is HttpOnly and SameSite=Lax, and Secure when
the request came over TLS.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from starlette.responses import Response

from ..errors import CbwError, Forbidden
from ..models.access import Role
from ..services.sessions import WebCaller
from ..wiring import Services

SESSION_COOKIE = "cbw_session"
SIGN_IN_COOKIE = "cbw_signin"  # the sign-in form's CSRF token, before there is a session

__all__ = ["WebCaller"]


class SignInRequired(Exception):
    """No live session: the page sends the browser to /login, to come back to `next` afterwards."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(CbwError):
    status_code = 403


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def over_tls(request: Request) -> bool:
    """Cookies are Secure when the request came over TLS, or when people reach the service at an https address
    (`CBW_PUBLIC_URL`) through a proxy that does not say so."""
    return request.url.scheme == "https" or services_of(request).settings.public_url.startswith("https://")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=over_tls(request))


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=over_tls(request))


async def current_caller(request: Request) -> WebCaller:
    caller: WebCaller | None = getattr(request.state, "web_caller", None)
    if caller is None:
        caller = await services_of(request).sessions.caller(request.cookies.get(SESSION_COOKIE))
        if caller is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(target if request.method == "GET" else "/")
        request.state.web_caller = caller
    return caller


CallerDep = Annotated[WebCaller, Depends(current_caller)]


def role_in(*roles: Role, doing: str) -> Callable[[WebCaller], Awaitable[WebCaller]]:
    """A page only these roles may see (a superadmin counts as an admin)."""
    allowed = set(roles) | ({Role.SUPERADMIN} if Role.ADMIN in roles else set())

    async def check(caller: CallerDep) -> WebCaller:
        if caller.principal.role not in allowed:
            raise Forbidden(f"a {caller.principal.role.value} may not {doing}")
        return caller

    return check


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site (Origin, else Referer); True when it says
    nothing (old clients, curl) since the form token still has to match."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    if not source or source == "null":
        return source != "null"
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def check_form_token(request: Request, sent: str | None, expected: str | None) -> None:
    if not same_origin(request):
        raise CsrfRefused("this form was sent from another site; open the page here and try again")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("this form has expired or was not sent from this site; reload the page and try again")


async def checked_form(request: Request, caller: WebCaller) -> dict[str, str]:
    """The form's fields, once its CSRF token is checked against the session's."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    check_form_token(request, fields.get("csrf"), caller.csrf_token)
    return fields


def new_form_token() -> str:
    return secrets.token_urlsafe(32)


def login_url(next_path: str) -> str:
    return "/login" if next_path in ("", "/") else f"/login?next={quote(next_path, safe='')}"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//evil.example` or `https://…`)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value
