"""`cbworkflow users create|list`: people who sign in to the web pages, from the command line."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from test_cli import cli, data_dir  # noqa: F401  (the fixture)

from cbworkflow.settings import Settings
from cbworkflow.wiring import build_services


def _sign_in(folder: Path, email: str, password: str) -> bool:
    async def run() -> bool:
        services = await build_services(Settings(data_dir=folder))
        try:
            return await services.sessions.sign_in(email, password, "test") is not None
        finally:
            await services.store.close()

    return asyncio.run(run())


def test_create_with_a_password_from_stdin_then_list(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,  # noqa: F811
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    code, out, err = cli(capsys, "users", "create", "--email", "ana@example.org", "--role", "admin", "--password")
    assert code == 0, err
    assert out.startswith("added ana@example.org (admin) to default as ")
    assert "invitation" not in out
    assert _sign_in(data_dir, "ana@example.org", "correct horse battery")
    assert not _sign_in(data_dir, "ana@example.org", "wrong password!")
    code, out, _ = cli(capsys, "users", "list")
    assert code == 0
    [line] = out.strip().splitlines()
    assert line.split()[1:] == ["admin", "active", "ana@example.org", "ana"]  # the name defaults to the address


def test_create_without_a_password_prints_an_invitation_link(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,  # noqa: F811
) -> None:
    monkeypatch.setenv("CBW_PUBLIC_URL", "https://outreach.example.org/")
    code, out, _ = cli(
        capsys, "users", "create", "--email", "sam@example.org", "--name", "Sam R", "--role", "volunteer"
    )
    assert code == 0
    link = out.strip().splitlines()[-1]
    assert link.startswith(
        "invitation link (valid 7 days, shown this once): https://outreach.example.org/invite/default."
    )
    code, out, _ = cli(capsys, "users", "list")
    assert out.split()[1:4] == ["volunteer", "invited", "sam@example.org"]


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:  # noqa: F811
    assert cli(capsys, "users", "create", "--email", "a@example.org", "--role", "staff")[0] == 0
    code, _, err = cli(capsys, "users", "create", "--email", "A@example.org", "--role", "staff")
    assert (code, err.strip()) == (1, "cbworkflow: A@example.org already signs in to this tenant")
    code, _, err = cli(capsys, "users", "create", "--email", "not-an-address", "--role", "staff")
    assert code == 2
    assert "--email" in err
    code, _, err = cli(capsys, "users", "create", "--email", "b@example.org", "--role", "superadmin")
    assert code == 2
    code, _, err = cli(capsys, "users", "list", "--tenant", "nope")
    assert code == 0  # an unknown tenant simply has nobody
