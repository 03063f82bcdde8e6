"""The commands of `cbworkflow` (running.md § Command line), as one Typer app.

Each command loads the settings itself, so `--help` and `--version` work whatever the environment says. A command
returns its exit status; `cli.main` turns every exception into one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer._click.globals import get_current_context

from ..models.access import Role, TenantCreate, TokenCreate
from ..services.access import DEFAULT_TENANT
from ..settings import Settings, SettingsError, load_settings
from . import files, serving
from .files import CliError

app = typer.Typer(
    name="cbworkflow",
    help="Workflow engine for campaign outreach.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
templates = typer.Typer(help="Template files (JSON).", no_args_is_help=True)
tenants = typer.Typer(help="Tenants.", no_args_is_help=True)
tokens = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(templates, name="templates")
app.add_typer(tenants, name="tenants")
app.add_typer(tokens, name="tokens")

TenantOption = Annotated[str, typer.Option("--tenant", help="the tenant to act on", metavar="TENANT")]


def _settings(*, runs_actions: bool = False) -> Settings:
    """The settings, checked; a bad `CBW_EXECUTORS` (or, for the processes that run actions, a missing SMTP or SMS
    setting) stops the program here with one line, not at the first text it should send."""
    from ..executors import build_executors, parse_executors

    settings = load_settings()
    try:
        if runs_actions:
            build_executors(settings)
        else:
            parse_executors(settings.executors)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if not runs_actions:  # serve and worker log as CBW_LOG_FORMAT says; the one-shot commands, for a person
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def _run(fn: Callable[[Any], Awaitable[int]], *, bootstrap: bool = True) -> int:
    """`fn(services)` on a freshly opened store, closed afterwards."""
    from ..wiring import bootstrap as do_bootstrap
    from ..wiring import build_services

    settings = _settings()

    async def go() -> int:
        services = await build_services(settings)
        try:
            if bootstrap:
                await do_bootstrap(services, load_example=False)
            return await fn(services)
        finally:
            await services.store.close()

    return asyncio.run(go())


def _run_value(fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """What `fn(services)` returns, on a freshly opened store (for commands that read one record)."""
    found: list[Any] = []

    async def keep(services: Any) -> int:
        found.append(await fn(services))
        return 0

    _run(keep)
    return found[0]


async def _every(fetch: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Every item of a paged list, a page of 500 at a time (`fetch(PageRequest)` gives one page)."""
    from ..store.base import PageRequest

    cursor = None
    while True:
        page = await fetch(PageRequest(500, cursor))
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _bad_value(exc: ValidationError, params: dict[str, str]) -> typer.BadParameter:
    """The first error of a request model as a usage error naming the option or argument it came from."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    kind, limits, given = first["type"], first.get("ctx") or {}, first.get("input")
    if kind == "string_pattern_mismatch":
        said = f"{given!r} is not an id: 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
    elif kind == "string_too_long":
        said = f"at most {limits.get('max_length')} characters (got {len(str(given))})"
    elif kind == "string_too_short":
        said = "must not be empty"
    else:
        said = str(first["msg"])
    hint = params.get(field, field or "value")
    return typer.BadParameter(said, ctx=get_current_context(), param_hint=f"'{hint}'")


def _print_version(value: bool) -> None:
    if value:
        print(f"cbworkflow {version('cbworkflow')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option("--version", help="print the version and exit", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Workflow engine for campaign outreach. Exit status: 0 done, 1 failed, 2 bad usage or a bad setting."""


# ---------------------------------------------------------------------------------------------------- processes
def _port(value: str | int) -> int:
    if isinstance(value, int) or (value.isdigit() and 1 <= int(value) <= 65535):
        return int(value)
    raise typer.BadParameter(f"{value!r} is not a port: use a number from 1 to 65535")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="the port to listen on", parser=_port, metavar="PORT")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="do not run the worker in this process")] = False,
) -> int:
    """The HTTP API and, unless --no-worker, the worker."""
    return serving.serve(_settings(runs_actions=True), host, port, run_worker=not no_worker)


@app.command()
def worker() -> int:
    """The worker alone: timers, AI decisions, webhooks, automatic actions (SIGTERM finishes the work in hand)."""
    return serving.worker(_settings(runs_actions=True))


@app.command()
def migrate() -> int:
    """Create or upgrade the store's schema."""

    async def run(services: Any) -> int:
        print(f"schema is up to date ({services.store.describe()})")
        return 0

    return _run(run, bootstrap=False)


# ---------------------------------------------------------------------------------------------------- templates
@templates.command("load")
def templates_load(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="template files (JSON), or folders (every *.json in them); a file without an id is named by its "
            "file name",
            metavar="PATH...",
            show_default=False,
        ),
    ],
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Load (or update) template files into the store; one with errors is saved as a draft."""
    from ..validation import validate_template
    from ..wiring import SYSTEM

    bodies = [(path, files.read_template(path, name_by_file=True)) for path in files.expand(paths)]

    async def run(services: Any) -> int:
        principal = SYSTEM.model_copy(update={"tenant": tenant})
        for path, body in bodies:
            template = await services.templates.create(principal, body, replace=True)
            print(f"{path}: loaded {template.id} {template.version} into tenant {tenant}")
            report = validate_template(body.start_node, body.nodes, body.triggers, body.goals)
            if not report.valid:
                print(
                    f"{path}: saved as a draft with {len(report.errors)} error(s); no contact can be enrolled until "
                    f"they are fixed (see: cbworkflow templates validate {path})",
                    file=sys.stderr,
                )
        return 0

    return _run(run)


@templates.command("validate")
def templates_validate(
    path: Annotated[Path, typer.Argument(help="the template file (JSON)", metavar="PATH", show_default=False)],
) -> int:
    """Check a template file: its errors and warnings; exit 1 if it has errors."""
    from ..validation import validate_template

    body = files.read_template(path)
    report = validate_template(body.start_node, body.nodes, body.triggers, body.goals)
    for kind, items in (("error", report.errors), ("warning", report.warnings)):
        for item in items:
            where = f" [{item.node}]" if item.node else ""
            print(f"{path}: {kind} {item.code}{where}: {item.message}")
    if not report.valid:
        print(f"cbworkflow: {path}: {len(report.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: valid ({len(report.warnings)} warning(s))")
    return 0


DIAGRAM_FORMATS = {".svg": "svg", ".mmd": "mermaid", ".mermaid": "mermaid"}


@templates.command("diagram")
def templates_diagram(
    source: Annotated[
        str,
        typer.Argument(
            help="a template file (JSON), or the id of a template in the store", metavar="PATH|ID", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="where to write: FILE.svg (a picture) or FILE.mmd (Mermaid text)", show_default=False
        ),
    ],
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Draw a template: its nodes by type, the outcomes on its edges, where it starts."""
    from ..diagram import graph_of, render_mermaid, render_svg

    kind = DIAGRAM_FORMATS.get(output.suffix.lower())
    if kind is None:
        raise typer.BadParameter(
            f"{str(output)!r} must end in .svg or .mmd", ctx=get_current_context(), param_hint="'-o'"
        )
    path = Path(source)
    if path.suffix.lower() == ".json" or path.is_file():
        body = files.read_template(path, name_by_file=True)
        nodes, start, title = body.nodes, body.start_node, body.name or path.stem
    else:

        async def fetch(services: Any) -> Any:
            return await services.templates.get(tenant, source)

        stored = _run_value(fetch)
        nodes, start, title = stored.nodes, stored.start_node, stored.name
    graph = graph_of(nodes, start)
    text = render_svg(graph, title) if kind == "svg" else render_mermaid(graph, title)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{output}: cannot write ({exc.strerror})") from None
    print(f"{output}: {len(nodes)} node(s) drawn as {'SVG' if kind == 'svg' else 'Mermaid'}")
    return 0


# ---------------------------------------------------------------------------------------------------- access
@tenants.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="the tenant's display name", metavar="NAME", show_default=False)],
    tenant_id: Annotated[
        str | None, typer.Option("--id", help="a slug for the tenant's id; generated when absent", metavar="ID")
    ] = None,
) -> int:
    """Create a tenant and its first admin token (the secret is printed once)."""
    try:
        body = TenantCreate(id=tenant_id, name=name)
    except ValidationError as exc:
        raise _bad_value(exc, {"id": "--id", "name": "NAME"}) from None

    async def run(services: Any) -> int:
        created = await services.access.create_tenant(None, body)
        print(json.dumps(created.model_dump(), indent=2))
        return 0

    return _run(run)


@tenants.command("list")
def tenants_list() -> int:
    """Every tenant, newest first: id, created, name."""

    async def run(services: Any) -> int:
        async for tenant in _every(lambda page: services.access.list_tenants(None, page)):
            print(f"{tenant.id}  {tenant.created_at.isoformat(timespec='seconds')}  {tenant.name}")
        return 0

    return _run(run)


@tokens.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="what the token may do", show_default=False)],
    tenant: TenantOption = DEFAULT_TENANT,
    name: Annotated[str | None, typer.Option("--name", help="a label shown in token lists", metavar="NAME")] = None,
) -> int:
    """Create a token (its secret is printed once)."""
    try:
        body = TokenCreate(role=role, name=name, tenant=tenant)
    except ValidationError as exc:
        raise _bad_value(exc, {"tenant": "--tenant", "name": "--name", "role": "--role"}) from None

    async def run(services: Any) -> int:
        created = await services.access.create_token(None, body)
        print(json.dumps(created.model_dump(mode="json"), indent=2))
        return 0

    return _run(run)


@tokens.command("list")
def tokens_list(tenant: TenantOption = DEFAULT_TENANT) -> int:
    """A tenant's tokens, without secrets: id, role, name."""

    async def run(services: Any) -> int:
        async for token in _every(lambda page: services.access.list_tokens(tenant, page)):
            print(f"{token.id}  {token.role.value:<10}  {token.name or ''}")
        return 0

    return _run(run)


@tokens.command("revoke")
def tokens_revoke(
    token_id: Annotated[
        str, typer.Argument(help="the token's id (from tokens list)", metavar="ID", show_default=False)
    ],
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Revoke a token at once."""

    async def run(services: Any) -> int:
        await services.access.revoke_token(None, tenant, token_id)
        print(f"revoked {token_id}")
        return 0

    return _run(run)


# ---------------------------------------------------------------------------------------------------- transfer
@app.command("export")
def export(
    folder: Annotated[Path, typer.Argument(help="an empty or new folder", metavar="DIR", show_default=False)],
    tenant: TenantOption = DEFAULT_TENANT,
    force: Annotated[
        bool, typer.Option("--force", help="replace an earlier export in DIR (other files there are kept)")
    ] = False,
) -> int:
    """Write a tenant's data as one JSON file per entity (files 0600, folders 0700)."""
    from ..services.transfer import ExportFolderNotEmpty, export_tenant

    async def run(services: Any) -> int:
        try:
            counts = await export_tenant(services.store, tenant, folder, replace=force)
        except ExportFolderNotEmpty as exc:
            raise CliError(f"{exc}; use --force to replace an earlier export") from None
        print(f"exported {counts} to {folder}")
        return 0

    return _run(run, bootstrap=False)


@app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="a folder written by export", metavar="DIR", show_default=False)],
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Read a folder written by export into a tenant (made if missing); a bad file changes nothing."""
    from ..services.transfer import import_tenant

    async def run(services: Any) -> int:
        counts = await import_tenant(services.store, tenant, folder)
        print(f"imported {counts} from {folder}")
        return 0

    return _run(run, bootstrap=False)
