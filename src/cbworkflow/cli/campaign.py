"""Campaign work from the command line: `enrol` (bulk enrolment with a progress bar) and `jobs list|show`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ..models.access import Principal, Role
from ..services.access import DEFAULT_TENANT
from .commands import TenantOption, _bad_value, _every, _run, _run_value, app

jobs = typer.Typer(help="Background jobs (bulk enrolments the API handed to the worker).", no_args_is_help=True)
app.add_typer(jobs, name="jobs")

CLI_ACTOR = "cli"  # the actor of what the command line does, in timelines


def _principal(tenant: str) -> Principal:
    return Principal(token_id=CLI_ACTOR, tenant=tenant, role=Role.ADMIN, name="command line")


@app.command("enrol")
def enrol(
    template: Annotated[str, typer.Argument(help="the template's id", metavar="TEMPLATE", show_default=False)],
    tag: Annotated[str | None, typer.Option("--tag", help="only contacts with this tag", metavar="TAG")] = None,
    county: Annotated[
        str | None, typer.Option("--county", help="only contacts in this county", metavar="COUNTY")
    ] = None,
    organization: Annotated[
        str | None, typer.Option("--organization", help="only contacts of this organisation", metavar="ORGANIZATION")
    ] = None,
    start: Annotated[bool, typer.Option("--start", help="start each new instance at once")] = False,
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Enrol every matching contact that is not yet in TEMPLATE (a batch per transaction, with a progress bar).

    Contacts already in it are skipped, so running it again after an interruption finishes the work."""
    from ..models.instances import BulkEnrol

    try:
        body = BulkEnrol.model_validate(
            {
                "template_id": template,
                "contacts": {"tag": tag, "county": county, "organization": organization},
                "start": start,
            }
        )
    except ValidationError as exc:
        raise _bad_value(exc, {"template_id": "TEMPLATE", "contacts": "--tag/--county/--organization"}) from None

    async def run(services: Any) -> int:
        principal = _principal(tenant)
        total = await services.bulk.count(principal, body)
        enrolled = skipped = 0
        with _progress(total) as advance:
            async for batch in services.bulk.batches(tenant, CLI_ACTOR, body):
                enrolled, skipped = enrolled + batch.enrolled, skipped + batch.skipped
                advance(batch.seen)
        print(f"{template}: enrolled {enrolled:,}, skipped {skipped:,} already in it ({enrolled + skipped:,} contacts)")
        return 0

    return _run(run)


class _progress:
    """A Rich progress bar on stderr at a terminal; nothing elsewhere (logs and pipes get the final line only)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda _n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("enrolling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )
        self.bar.start()
        task = self.bar.add_task("enrol", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@jobs.command("list")
def jobs_list(tenant: TenantOption = DEFAULT_TENANT) -> int:
    """A tenant's jobs, newest first: id, status, kind, progress, created."""

    async def run(services: Any) -> int:
        async for job in _every(lambda page: services.jobs.list(tenant, page)):
            total = "?" if job.progress.total is None else f"{job.progress.total:,}"
            created = job.created_at.isoformat(timespec="seconds")
            print(f"{job.id}  {job.status.value:<9}  {job.kind.value}  {job.progress.done:,}/{total}  {created}")
        return 0

    return _run(run)


@jobs.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="the job's id (from jobs list)", metavar="ID", show_default=False)],
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """One job as the API shows it (JSON)."""

    async def fetch(services: Any) -> Any:
        return await services.jobs.get(tenant, job_id)

    print(json.dumps(_run_value(fetch).model_dump(mode="json"), indent=2))
    return 0
