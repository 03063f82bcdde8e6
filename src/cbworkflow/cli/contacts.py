"""`cbworkflow contacts import FILE` and `contacts export FILE`: a CSV or JSON-lines file (by its extension).

The import runs in the command's own process, a batch per transaction, like `enrol` (no job): a progress bar at a
terminal, a report for a person at the end, and every rejected row written beside the file as
`FILE.rejected.csv` (line, reason). The export streams the contacts a page at a time into the file.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.imports import FileFormat
from ..services.access import DEFAULT_TENANT
from .campaign import CLI_ACTOR
from .commands import TenantOption, _run, app
from .files import CliError

contacts = typer.Typer(help="Contacts files: import and export CSV or JSON lines.", no_args_is_help=True)
app.add_typer(contacts, name="contacts")

FileArgument = Annotated[
    Path,
    typer.Argument(help="a .csv, .jsonl or .ndjson file", metavar="FILE", show_default=False),
]
SHOWN_REJECTIONS = 20  # rejections printed at the end; the file beside has them all


def rejected_file(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.csv")


@contacts.command("import")
def contacts_import(
    file: FileArgument,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what the import would do; write nothing")] = False,
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Import contacts from FILE: each row updates the contact its id, external_id, email or phone finds, or
    creates one. Rejected rows are listed at the end and written to FILE.rejected.csv."""
    from ..services.contact_import import Report

    fmt = _format(file)
    if not file.is_file():
        raise CliError(f"{file}: no such file")

    async def run(services: Any) -> int:
        await _check_tenant(services, tenant)
        prepared = await services.imports.prepare(file, fmt)
        rejected_path = rejected_file(file)
        out = rejected_path.open("w", newline="", encoding="utf-8")
        writer = csv.writer(out)
        writer.writerow(["line", "reason"])
        report = Report(dry_run=dry_run, on_rejection=lambda line, reason: writer.writerow([line, reason]))
        try:
            with _Progress(prepared.rows, "checking" if dry_run else "importing") as advance:
                async for rows in services.imports.batches(tenant, CLI_ACTOR, prepared, report):
                    advance(rows)
        finally:
            out.close()
            prepared.discard()
        if report.rejected == 0:
            rejected_path.unlink(missing_ok=True)
        _say_report(file, report, rejected_path, prepared.rows)
        return 0

    return _run(run)


def _format(file: Path) -> FileFormat:
    from ..errors import InvalidInput
    from ..services.contact_files import format_of

    try:
        return format_of(file)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.detail, param_hint="FILE") from None


def _say_report(file: Path, report: Any, rejected_path: Path, rows: int) -> None:
    would = "would be " if report.dry_run else ""
    print(f"{file}: {rows:,} rows{' (dry run: nothing written)' if report.dry_run else ''}")
    counts = ((f"{would}created", report.created), (f"{would}updated", report.updated))
    for label, count in (*counts, ("unchanged", report.unchanged), ("rejected", report.rejected)):
        print(f"  {label:<18} {count:>10,}")
    if report.rejected:
        print(f"rejected rows (all {report.rejected:,} with their reasons in {rejected_path}):")
        for rejection in report.rejections[:SHOWN_REJECTIONS]:
            print(f"  line {rejection['line']}: {rejection['reason']}")
        if report.rejected > SHOWN_REJECTIONS:
            print(f"  … and {report.rejected - SHOWN_REJECTIONS:,} more")


@contacts.command("export")
def contacts_export(file: FileArgument, tenant: TenantOption = DEFAULT_TENANT) -> int:
    """Write every contact of the tenant to FILE (CSV with a header row, or JSON lines), newest first; importing
    it again changes nothing. The file is made 0600: it holds personal data."""
    from ..services.contact_files import csv_header, csv_row, jsonl_row
    from ..store.base import ContactFilter

    fmt = _format(file)

    async def run(services: Any) -> int:
        await _check_tenant(services, tenant)
        count = 0
        partial = file.with_name(f".{file.name}.partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as out:
                if fmt is FileFormat.CSV:
                    out.write(csv_header())
                write = csv_row if fmt is FileFormat.CSV else jsonl_row
                async for page in services.imports.export(tenant, ContactFilter()):
                    out.write("".join(write(contact) for contact in page))
                    count += len(page)
            partial.replace(file)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        print(f"{file}: {count:,} contacts")
        return 0

    return _run(run)


class _Progress:
    """A Rich progress bar on stderr at a terminal; nothing elsewhere."""

    def __init__(self, total: int, words: str) -> None:
        self.total = total
        self.words = words
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda _n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(self.words),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )
        self.bar.start()
        task = self.bar.add_task(self.words, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


async def _check_tenant(services: Any, tenant: str) -> None:
    """A mistyped --tenant is a failure naming it, not an empty export or contacts in a tenant nobody has."""
    if await services.store.system_read(lambda stx: stx.get_tenant(tenant)) is None:
        raise CliError(f"no tenant {tenant!r} in {services.store.describe()}")
