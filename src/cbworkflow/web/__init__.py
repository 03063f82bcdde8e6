"""The web pages (shared/spec web.md): rendered on the server by the same app as the API, plain HTML forms, a
stylesheet of our own, no build step and nothing loaded from outside the server.

`install(app)` adds the pages, the stylesheet under `/static/`, and the error pages: a browser asking for a page
gets an HTML answer (the sign-in page when it has no session), while `/api` keeps its JSON errors.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from . import admin, contacts, dashboard, instances, sign_in, volunteer, workflows
from .auth import SignInRequired, login_url
from .templating import render

NOT_PAGES = ("/api/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/static/")
TITLES = {
    400: "Bad request",
    401: "Sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Not valid",
    429: "Too many tries",
    503: "Busy",
}


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, which answers JSON whatever the client accepts)."""
    path = request.url.path
    return not path.startswith(NOT_PAGES) and "text/html" in request.headers.get("accept", "")


def page_error(request: Request, status_code: int, detail: str) -> Response:
    title = TITLES.get(status_code, "Something went wrong")
    message = detail[:1].upper() + detail[1:] if detail else title
    return render(request, "error.html", title=title, message=message, status_code=status_code)


def install(app: FastAPI) -> None:
    for module in (sign_in, dashboard, volunteer, contacts, workflows, instances, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(files("cbworkflow.web") / "static")), name="static")
    app.state.page_error = page_error
    app.state.wants_page = wants_page

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(login_url(exc.next_path), status_code=303)
