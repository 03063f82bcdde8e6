"""`cbworkflow simulate PATH|ID`: every path of a template on a simulated clock, as a table (nothing is stored,
sent or asked of a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ..models.simulation import SimulateRequest
from ..services.access import DEFAULT_TENANT
from .commands import TenantOption, _bad_value, _run, app
from .files import CliError, read_template


@app.command("simulate")
def simulate(
    source: Annotated[
        str,
        typer.Argument(
            help="a template file (JSON), or the id of a template in the store", metavar="PATH|ID", show_default=False
        ),
    ],
    start_at: Annotated[
        str | None,
        typer.Option("--start-at", help="when the run starts, ISO 8601 (default: now)", metavar="TIME"),
    ] = None,
    choose: Annotated[
        list[str] | None,
        typer.Option(
            "--choose", help="NODE=OUTCOME: the outcome a node always takes (repeatable)", metavar="NODE=OUTCOME"
        ),
    ] = None,
    max_paths: Annotated[int, typer.Option("--max-paths", help="stop after this many paths (1 to 1,000)")] = 200,
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Every path of a template on a simulated clock, with the waits and contact hours applied: what a voter would
    go through, and how long it takes. Nothing is stored or sent."""
    fixed: dict[str, str] = {}
    for pair in choose or []:
        node, sep, outcome = pair.partition("=")
        if not sep or not node.strip() or not outcome.strip():
            raise typer.BadParameter(f"{pair!r} is not NODE=OUTCOME", param_hint="'--choose'")
        fixed[node.strip()] = outcome.strip()
    try:
        body = SimulateRequest(start_at=start_at, choose=fixed, max_paths=max_paths)
    except ValidationError as exc:
        raise _bad_value(exc, {"start_at": "--start-at", "max_paths": "--max-paths", "choose": "--choose"}) from None
    path = Path(source)
    from_file = path.suffix.lower() == ".json" or path.is_file()

    async def run(services: Any) -> int:
        from ..models.templates import WorkflowTemplate
        from ..wiring import SYSTEM

        if from_file:
            given = read_template(path, name_by_file=True)
            now = services.clock.now()
            template = WorkflowTemplate.model_validate(
                {
                    **given.model_dump(),
                    "id": given.id or path.stem,
                    "tenant": tenant,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            rules = await services.simulation.rules_for(tenant, template)
            found = await services.simulation.run(template, rules, body)
        else:
            principal = SYSTEM.model_copy(update={"tenant": tenant})
            found = await services.simulation.of_stored(principal, source, body)
        _print(found)
        return 0

    return _run(run)


def _print(found: Any) -> None:
    if not found.paths:
        raise CliError("the template has no path to simulate")
    width = max(len(p.end_status or "cut short") for p in found.paths)
    print(f"{'#':>3}  {'ends':<{width}}  {'after':<10}  path")
    for number, path in enumerate(found.paths, start=1):
        route = " → ".join(f"{s.node} ({s.outcome})" for s in path.steps) or "(ends at once)"
        print(f"{number:>3}  {path.end_status or 'cut short':<{width}}  {path.duration:<10}  {route}")
    more = "; there are more (raise --max-paths)" if found.truncated else ""
    print(f"{len(found.paths)} path(s){more}")
