"""/login, /logout and /invite/{link}: signing in with an email and a password, signing out, and choosing a password
from an invitation link."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response

from ..errors import CbwError
from ..services.sessions import LONGEST, ChooseTenant, SignedIn
from .auth import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    check_form_token,
    clear_cookie,
    new_form_token,
    safe_next,
    services_of,
    set_cookie,
)
from .templating import render

router = APIRouter(include_in_schema=False)
LinkPath = Annotated[str, Path(max_length=400)]


def _sign_in_page(
    request: Request,
    *,
    next_path: str,
    error: str | None = None,
    email: str = "",
    tenants: list[tuple[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    token = request.cookies.get(SIGN_IN_COOKIE) or new_form_token()
    response = render(
        request,
        "login.html",
        form_token=token,
        next_path=next_path,
        error=error,
        email=email,
        tenants=tenants or [],
        status_code=status_code,
    )
    set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


async def _signed_in(request: Request, signed: SignedIn, next_path: str) -> Response:
    """Straight to where they were going, with a brand-new session id (never one the browser already had, which
    ends here). The cookie lasts as long as a session can; the store ends it sooner when it is not used."""
    previous = await services_of(request).sessions.caller(request.cookies.get(SESSION_COOKIE))
    if previous is not None:
        await services_of(request).sessions.sign_out(previous)
    response = RedirectResponse(safe_next(next_path), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, signed.cookie, max_age=int(LONGEST.total_seconds()))
    clear_cookie(request, response, SIGN_IN_COOKIE)
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    caller = await services_of(request).sessions.caller(request.cookies.get(SESSION_COOKIE))
    if caller is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _sign_in_page(request, next_path=safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    next_path = safe_next(form.get("next"))
    check_form_token(request, form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE))
    email = form.get("email", "").strip()[:320]
    password = form.get("password", "")[:200]
    if not email or not password:
        return _sign_in_page(
            request, next_path=next_path, email=email, error="Type your email and your password.", status_code=422
        )
    client = request.client.host if request.client else "unknown"
    try:
        result = await services_of(request).sessions.sign_in(email, password, client, form.get("tenant") or None)
    except CbwError as exc:
        if exc.status_code not in (429, 503):
            raise
        message = exc.detail[:1].upper() + exc.detail[1:] + "."
        response = _sign_in_page(request, next_path=next_path, email=email, error=message, status_code=exc.status_code)
        response.headers["Retry-After"] = str(exc.extra.get("retry_after", 5))
        return response
    if result is None:
        return _sign_in_page(
            request,
            next_path=next_path,
            email=email,
            error="That email and password do not match an account. Check both and try again.",
            status_code=401,
        )
    if isinstance(result, ChooseTenant):
        return _sign_in_page(request, next_path=next_path, email=email, tenants=result.tenants)
    return await _signed_in(request, result, next_path)


@router.post("/logout")
async def logout(request: Request) -> Response:
    caller = await services_of(request).sessions.caller(request.cookies.get(SESSION_COOKIE))
    if caller is not None:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        check_form_token(request, form.get("csrf"), caller.csrf_token)
        await services_of(request).sessions.sign_out(caller)
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


@router.get("/logout")
async def logout_link(request: Request) -> Response:
    """A link to /logout signs out, unless another site sent the browser here: then it asks first."""
    caller = await services_of(request).sessions.caller(request.cookies.get(SESSION_COOKIE))
    if caller is None:
        response: Response = RedirectResponse("/login", status_code=303)
    elif _from_here(request):
        await services_of(request).sessions.sign_out(caller)
        response = RedirectResponse("/login", status_code=303)
    else:
        return render(request, "logout.html", caller=caller)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


def _from_here(request: Request) -> bool:
    """The browser says the link was on this site, or typed: `Sec-Fetch-Site`, else a `Referer` of this site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    referer = urlsplit(request.headers.get("referer") or "")
    return f"{referer.scheme}://{referer.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


@router.get("/invite/{link}")
async def invitation_page(request: Request, link: LinkPath) -> Response:
    try:
        user = await services_of(request).users.invitation(link)
    except CbwError as exc:
        return render(request, "error.html", title="Invitation", message=exc.detail, status_code=exc.status_code)
    token = request.cookies.get(SIGN_IN_COOKIE) or new_form_token()
    response = render(request, "invite.html", user=user, link=link, form_token=token, error=None)
    set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.post("/invite/{link}")
async def accept_invitation(request: Request, link: LinkPath) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    check_form_token(request, form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE))
    services = services_of(request)
    try:
        user = await services.users.invitation(link)
    except CbwError as exc:
        return render(request, "error.html", title="Invitation", message=exc.detail, status_code=exc.status_code)
    password, again = form.get("password", ""), form.get("password_again", "")
    error = None
    if password != again:
        error = "The two passwords are not the same."
    else:
        try:
            user = await services.users.accept(link, password)
        except CbwError as exc:
            if exc.status_code != 422:
                raise
            error = exc.detail.replace("password: ", "The password needs ", 1) + "."
    if error is not None:
        token = request.cookies.get(SIGN_IN_COOKIE) or new_form_token()
        return render(request, "invite.html", user=user, link=link, form_token=token, error=error, status_code=422)
    signed = await services.sessions.open(user)
    return await _signed_in(request, signed, "/")
