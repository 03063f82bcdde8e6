"""`cbworkflow users create|list`: the people who sign in to the web pages."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ..models.users import UserCreate, UserRole
from ..services.access import DEFAULT_TENANT
from .commands import TenantOption, _bad_value, _every, _run, app
from .files import CliError

users = typer.Typer(help="People who sign in to the web pages.", no_args_is_help=True)
app.add_typer(users, name="users")


def _read_password() -> str:
    """Asked for at a terminal (not echoed, typed twice); else the first line of standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password (at least 10 characters): ")
    if getpass.getpass("Password again: ") != first:
        raise CliError("the two passwords are not the same")
    return first


@users.command("create")
def users_create(
    email: Annotated[str, typer.Option("--email", help="the address they sign in with", show_default=False)],
    role: Annotated[UserRole, typer.Option("--role", help="what they may do", show_default=False)],
    password: Annotated[
        bool,
        typer.Option(
            "--password",
            help="set a password now (asked for at a terminal, else read from standard input); "
            "without it, an invitation link valid 7 days is printed",
        ),
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="their name, as pages show it (default: the address before @)")
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> int:
    """Add a person who signs in to the web pages of TENANT."""
    secret = _read_password() if password else None
    try:
        body = UserCreate(email=email, name=name or email.split("@")[0], role=role, password=secret)
    except ValidationError as exc:
        raise _bad_value(
            exc, {"email": "--email", "name": "--name", "role": "--role", "password": "--password"}
        ) from None

    async def run(services: Any) -> int:
        created = await services.users.create(None, tenant, body)
        user = created.user
        print(f"added {user.email} ({user.role.value}) to {tenant} as {user.id}")
        if created.invitation_url:
            print(f"invitation link (valid 7 days, shown this once): {created.invitation_url}")
        return 0

    return _run(run)


@users.command("list")
def users_list(tenant: TenantOption = DEFAULT_TENANT) -> int:
    """A tenant's people: id, role, status, email, name."""

    async def run(services: Any) -> int:
        async for user in _every(lambda page: services.users.list(tenant, page)):
            print(f"{user.id}  {user.role.value:<9}  {user.status.value:<7}  {user.email}  {user.name}")
        return 0

    return _run(run)
