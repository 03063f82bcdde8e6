"""The "Simulate" section of /workflows/{id}: every path of the template on a simulated clock, asked for with a
GET form (a dry run changes nothing, so it needs no form token), shown as a table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from ..errors import CbwError
from ..models.simulation import SimulateRequest, SimulationResult
from .auth import WebCaller, services_of

PAGE_PATHS = 50  # paths a page shows; the API gives up to 1,000


@dataclass
class SimulationView:
    asked: bool = False
    start_at: str = ""  # as the datetime-local field shows it (UTC)
    timezone: str = ""
    result: SimulationResult | None = None
    error: str | None = None


async def simulation_view(request: Request, caller: WebCaller, template_id: str) -> SimulationView:
    """The section's state: the form's last values and, when asked, the paths or what was wrong."""
    query = request.query_params
    view = SimulationView(
        asked=query.get("simulate") == "1",
        start_at=(query.get("start_at") or "")[:20],
        timezone=(query.get("timezone") or "").strip()[:64],
    )
    if not view.asked:
        return view
    body: dict[str, Any] = {"max_paths": PAGE_PATHS}
    if view.start_at:
        try:
            body["start_at"] = datetime.fromisoformat(view.start_at).replace(tzinfo=UTC)
        except ValueError:
            view.error = "The start is not a date and time (for example 2026-10-05T09:00)."
            return view
    if view.timezone:
        body["contact"] = {"timezone": view.timezone}
    try:
        request_body = SimulateRequest.model_validate(body)
    except ValidationError:
        view.error = "That start cannot be used; leave it empty to start now."
        return view
    try:
        view.result = await services_of(request).simulation.of_stored(caller.principal, template_id, request_body)
    except CbwError as exc:
        if exc.status_code != 422:
            raise
        detail = exc.detail
        view.error = (
            "That time zone is not one we know (use a name like America/Los_Angeles)."
            if ("timezone" in detail or "time zone" in detail)
            else detail[:1].upper() + detail[1:]
        )
    return view
