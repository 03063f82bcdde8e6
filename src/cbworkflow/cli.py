"""The `cbworkflow` command (running.md § Command line).

Every command exits 0 on success and otherwise prints one clear line on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import CbwError
from .models.access import Role, TenantCreate, TokenCreate
from .models.templates import TemplateCreate
from .settings import Settings, SettingsError, load_settings
from .store import UnsupportedStore


class CliError(Exception):
    """A failure to report as one line on stderr."""


def _services(settings: Settings) -> Any:
    from .wiring import build_services

    return build_services(settings)


async def _with_services(settings: Settings, fn: Callable[[Any], Awaitable[int]], *, bootstrap: bool = True) -> int:
    from .wiring import bootstrap as do_bootstrap

    services = await _services(settings)
    try:
        if bootstrap:
            await do_bootstrap(services, load_example=False)
        return await fn(services)
    finally:
        await services.store.close()


def _load_template_file(path: Path) -> TemplateCreate:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: not valid JSON ({exc})") from None
    try:
        return TemplateCreate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(template)"
        raise CliError(f"{path}: {where}: {first['msg']}") from None


# ---------------------------------------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from . import logs
    from .api.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings, run_worker=not args.no_worker)
    # uvicorn's loggers go through our handler (log_config=None); api/request_log.py writes the access lines.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=settings.log_level.lower(), log_config=None, access_log=False
    )
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    async def run(services: Any) -> int:
        print(f"schema is up to date ({services.store.describe()})")
        return 0

    return asyncio.run(_with_services(settings, run, bootstrap=False))


def cmd_templates_validate(args: argparse.Namespace, _settings: Settings) -> int:
    from .validation import validate_template

    body = _load_template_file(Path(args.path))
    report = validate_template(body.start_node, body.nodes, body.triggers)
    for kind, items in (("error", report.errors), ("warning", report.warnings)):
        for item in items:
            where = f" [{item.node}]" if item.node else ""
            print(f"{args.path}: {kind} {item.code}{where}: {item.message}")
    if not report.valid:
        print(f"{args.path}: {len(report.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: valid ({len(report.warnings)} warning(s))")
    return 0


def cmd_templates_load(args: argparse.Namespace, settings: Settings) -> int:
    from .validation import validate_template
    from .wiring import SYSTEM

    bodies = [(path, _load_template_file(Path(path))) for path in args.paths]

    async def run(services: Any) -> int:
        principal = SYSTEM.model_copy(update={"tenant": args.tenant})
        for path, body in bodies:
            template = await services.templates.create(principal, body, replace=True)
            print(f"{path}: loaded {template.id} {template.version} into tenant {args.tenant}")
            report = validate_template(body.start_node, body.nodes, body.triggers)
            if not report.valid:
                print(
                    f"{path}: saved as a draft with {len(report.errors)} error(s); no contact can be enrolled until "
                    f"they are fixed (see: cbworkflow templates validate {path})",
                    file=sys.stderr,
                )
        return 0

    return asyncio.run(_with_services(settings, run))


def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async def run(services: Any) -> int:
        created = await services.access.create_tenant(None, TenantCreate(id=args.id, name=args.name))
        print(json.dumps(created.model_dump(), indent=2))
        return 0

    return asyncio.run(_with_services(settings, run))


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    async def run(services: Any) -> int:
        body = TokenCreate(role=Role(args.role), name=args.name, tenant=args.tenant)
        created = await services.access.create_token(None, body)
        print(json.dumps(created.model_dump(mode="json"), indent=2))
        return 0

    return asyncio.run(_with_services(settings, run))


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    from .store.base import PageRequest

    async def run(services: Any) -> int:
        cursor = None
        while True:
            page = await services.access.list_tokens(args.tenant, PageRequest(500, cursor))
            for token in page.items:
                print(f"{token.id}  {token.role.value:<10}  {token.name or ''}")
            if page.next_cursor is None:
                return 0
            cursor = page.next_cursor

    return asyncio.run(_with_services(settings, run))


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def run(services: Any) -> int:
        await services.access.revoke_token(None, args.tenant, args.id)
        print(f"revoked {args.id}")
        return 0

    return asyncio.run(_with_services(settings, run))


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .services.transfer import export_tenant

    async def run(services: Any) -> int:
        counts = await export_tenant(services.store, args.tenant, Path(args.dir))
        print(f"exported {counts} to {args.dir}")
        return 0

    return asyncio.run(_with_services(settings, run, bootstrap=False))


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from .services.transfer import import_tenant

    async def run(services: Any) -> int:
        counts = await import_tenant(services.store, args.tenant, Path(args.dir))
        print(f"imported {counts} from {args.dir}")
        return 0

    return asyncio.run(_with_services(settings, run, bootstrap=False))


def cmd_worker(_args: argparse.Namespace, settings: Settings) -> int:
    """The worker alone, until SIGTERM or SIGINT (then it finishes the work it started and exits 0)."""
    import signal

    from . import logs
    from .wiring import make_worker

    logs.configure(settings.log_level, settings.log_format)

    async def run(services: Any) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await make_worker(services).run(stop)
        return 0

    return asyncio.run(_with_services(settings, run, bootstrap=False))


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cbworkflow", description="Workflow engine for campaign outreach.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="the HTTP API and, unless --no-worker, the worker")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="do not run the worker in this process")
    serve.set_defaults(fn=cmd_serve)

    sub.add_parser("worker", help="the worker alone: timers, AI decisions, webhooks, automatic actions").set_defaults(
        fn=cmd_worker
    )
    sub.add_parser("migrate", help="create or upgrade the store's schema").set_defaults(fn=cmd_migrate)

    templates = sub.add_parser("templates", help="template files").add_subparsers(dest="action", required=True)
    load = templates.add_parser("load", help="load (or update) template files into the store")
    load.add_argument("paths", nargs="+", metavar="PATH")
    load.add_argument("--tenant", default="default")
    load.set_defaults(fn=cmd_templates_load)
    validate = templates.add_parser("validate", help="check a template file")
    validate.add_argument("path", metavar="PATH")
    validate.set_defaults(fn=cmd_templates_validate)

    tenants = sub.add_parser("tenants", help="tenants").add_subparsers(dest="action", required=True)
    create_tenant = tenants.add_parser("create", help="create a tenant and its first admin token")
    create_tenant.add_argument("name")
    create_tenant.add_argument("--id", default=None, help="a slug; generated when absent")
    create_tenant.set_defaults(fn=cmd_tenants_create)

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="action", required=True)
    create_token = tokens.add_parser("create", help="create a token (its secret is printed once)")
    create_token.add_argument("--tenant", default="default")
    create_token.add_argument("--role", required=True, choices=[r.value for r in Role])
    create_token.add_argument("--name", default=None)
    create_token.set_defaults(fn=cmd_tokens_create)
    list_tokens = tokens.add_parser("list", help="a tenant's tokens, without secrets")
    list_tokens.add_argument("--tenant", default="default")
    list_tokens.set_defaults(fn=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("id")
    revoke.add_argument("--tenant", default="default")
    revoke.set_defaults(fn=cmd_tokens_revoke)

    export = sub.add_parser("export", help="write a tenant's data as one JSON file per entity")
    export.add_argument("dir", metavar="DIR")
    export.add_argument("--tenant", default="default")
    export.set_defaults(fn=cmd_export)
    imp = sub.add_parser("import", help="read a folder written by export")
    imp.add_argument("dir", metavar="DIR")
    imp.add_argument("--tenant", default="default")
    imp.set_defaults(fn=cmd_import)
    return parser


def _check_executors(settings: Settings, *, build: bool) -> None:
    """A bad `CBW_EXECUTORS` (or, for the processes that run actions, a missing SMTP or SMS setting) stops the
    program at start with one line, not at the first text it should send."""
    from .executors import build_executors, parse_executors

    try:
        if build:
            build_executors(settings)
        else:
            parse_executors(settings.executors)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _check_executors(settings, build=args.fn in (cmd_serve, cmd_worker))
        if args.fn is not cmd_serve:  # serve logs as CBW_LOG_FORMAT says; the one-shot commands, for a person
            logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        code: int = args.fn(args, settings)
        return code
    except (SettingsError, UnsupportedStore) as exc:
        print(f"cbworkflow: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"cbworkflow: {exc}", file=sys.stderr)
        return 1
    except CbwError as exc:
        print(f"cbworkflow: {exc.detail}", file=sys.stderr)
        return 1
    except Exception as exc:
        from .services.transfer import TransferError

        if isinstance(exc, TransferError):
            print(f"cbworkflow: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
