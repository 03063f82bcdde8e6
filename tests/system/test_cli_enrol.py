"""`cbworkflow enrol` and `cbworkflow jobs`: bulk enrolment from the command line, and the jobs it can read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_cli import cli, data_dir  # noqa: F401  (the fixture)

from cbworkflow.models.contacts import ContactCreate
from cbworkflow.settings import Settings
from cbworkflow.store.base import InstanceFilter, PageRequest
from cbworkflow.wiring import SYSTEM, build_services
from conftest import REFERENCE


def _contacts(folder: Path, **groups: int) -> None:
    async def run() -> None:
        services = await build_services(Settings(data_dir=folder))
        try:
            for county, count in groups.items():
                for i in range(count):
                    await services.contacts.create(SYSTEM, ContactCreate(name=f"{county} {i}", county=county))
        finally:
            await services.store.close()

    asyncio.run(run())


def _instances(folder: Path) -> list[tuple[str, str]]:
    async def run() -> list[tuple[str, str]]:
        services = await build_services(Settings(data_dir=folder))
        try:
            page = await services.instances.list(SYSTEM.tenant, InstanceFilter(), PageRequest(limit=500))
            return sorted((i.contact_id, i.status.value) for i in page.items)
        finally:
            await services.store.close()

    return asyncio.run(run())


def test_enrol_takes_the_matching_contacts_once(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:  # noqa: F811
    assert cli(capsys, "templates", "load", str(REFERENCE))[0] == 0
    _contacts(data_dir, Adams=3, Baker=2)
    code, out, _ = cli(capsys, "enrol", "county-outreach-v1", "--county", "Adams", "--start")
    assert code == 0
    assert out.strip() == "county-outreach-v1: enrolled 3, skipped 0 already in it (3 contacts)"
    assert [status for _, status in _instances(data_dir)] == ["active"] * 3
    code, out, _ = cli(capsys, "enrol", "county-outreach-v1", "--county", "Adams")
    assert out.strip() == "county-outreach-v1: enrolled 0, skipped 3 already in it (3 contacts)"
    assert len(_instances(data_dir)) == 3


def test_enrol_and_jobs_errors_are_one_line(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:  # noqa: F811
    assert cli(capsys, "tenants", "list")[0] == 0  # the first start, which shows the generated token, is behind us
    code, _, err = cli(capsys, "enrol", "no-such-template")
    assert (code, err.strip()) == (1, "cbworkflow: no workflow template with id 'no-such-template'")
    code, _, err = cli(capsys, "enrol", "x", "--tag", "Bad Tag")
    assert code == 2
    assert "--tag" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = cli(capsys, "jobs", "list")
    assert (code, out) == (0, "")
    code, _, err = cli(capsys, "jobs", "show", "abc")
    assert (code, err.strip()) == (1, "cbworkflow: no job with id 'abc'")
