"""The `cbworkflow` command: exit codes, one-line errors, and export/import round trips."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from cbworkflow.cli import app, main
from cbworkflow.models.access import Role, TokenCreate
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.instances import InstanceCreate, TransitionRequest
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.services.access import DEFAULT_TENANT
from cbworkflow.settings import Settings
from cbworkflow.store.base import PageRequest
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import REFERENCE, PostgresDatabase, reference_template


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("CBW_DATA_DIR", str(folder))
    monkeypatch.delenv("CBW_DATABASE_URL", raising=False)
    monkeypatch.delenv("CBW_ADMIN_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return folder


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_templates_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "templates", "validate", str(REFERENCE))
    assert code == 0
    assert "valid (0 warning(s))" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x"}', "nodes: Field required"),
        (json.dumps({"name": "x", "start_node": "a", "nodes": {"a": {"type": "action"}}}), "2 error(s)"),
    ],
)
def test_templates_validate_bad_file_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = cli(capsys, "templates", "validate", str(path))
    assert code != 0
    assert str(path) in err
    assert expected in out + err
    assert len(err.strip().splitlines()) == 1


def test_missing_file(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, _, err = cli(capsys, "templates", "load", "/nonexistent/file.json")
    assert code == 1
    assert err.strip() == "cbworkflow: /nonexistent/file.json: cannot read (No such file or directory)"


def test_loading_a_template_with_errors_warns_it_is_a_draft(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    broken = reference_template()
    broken["nodes"]["initial_call"]["transitions"]["no_answer"] = "nowhere"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, out, err = cli(capsys, "templates", "load", str(path))
    assert code == 0
    assert "loaded county-outreach-v1" in out
    assert "saved as a draft with 1 error(s)" in err


def test_bad_setting_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBW_WORKER_POLL_INTERVAL", "soon")
    code, _, err = cli(capsys, "migrate")
    assert code == 2
    assert err.startswith("cbworkflow: CBW_WORKER_POLL_INTERVAL:")
    assert len(err.strip().splitlines()) == 1


def test_unsupported_store_url(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBW_DATABASE_URL", "mysql://x")
    code, _, err = cli(capsys, "migrate")
    assert code == 2
    assert "CBW_DATABASE_URL" in err


def test_access_commands(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert cli(capsys, "migrate")[0] == 0
    code, out, _ = cli(capsys, "tenants", "create", "North County", "--id", "north")
    assert code == 0
    created = json.loads(out)
    assert created["id"] == "north"
    assert created["admin_token"].startswith("cbw_")
    code, out, _ = cli(capsys, "tokens", "create", "--tenant", "north", "--role", "staff", "--name", "desk")
    assert code == 0
    token = json.loads(out)
    assert token["role"] == "staff"
    code, out, _ = cli(capsys, "tokens", "list", "--tenant", "north")
    assert token["id"] in out
    assert token["token"] not in out
    assert cli(capsys, "tokens", "revoke", token["id"], "--tenant", "north")[0] == 0
    code, _, err = cli(capsys, "tokens", "revoke", token["id"], "--tenant", "north")
    assert code == 1
    assert "no token" in err
    code, _, err = cli(capsys, "tokens", "create", "--tenant", "nowhere", "--role", "admin")
    assert code == 1
    assert "no tenant" in err


def test_templates_load(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, out, _ = cli(capsys, "templates", "load", str(REFERENCE))
    assert code == 0
    assert "loaded county-outreach-v1 1.0.0" in out
    changed = reference_template()
    changed["nodes"]["end_success"]["end_status"] = "reached"
    path = data_dir / "changed.json"
    path.write_text(json.dumps(changed))
    code, out, _ = cli(capsys, "templates", "load", str(path))
    assert "loaded county-outreach-v1 1.1.0" in out  # loading again updates, bumping the minor version


def _populate(settings: Settings) -> None:
    async def go() -> None:
        services = await build_services(settings)
        await bootstrap(services, load_example=False)
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(reference_template()))
        template = reference_template()
        template["nodes"]["end_success"]["end_status"] = "reached"
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(template), replace=True)
        await services.access.create_token(None, TokenCreate(role=Role.VOLUNTEER, name="canvasser"))
        for i in range(7):
            contact = await services.contacts.create(
                SYSTEM, ContactCreate(name=f"Person {i}", phone=f"555-201-{i:04}", tags=["voter"])
            )
            await services.contacts.change_tag(SYSTEM, contact.id, "door", True)
            inst = await services.instances.create(
                SYSTEM, InstanceCreate(contact_id=contact.id, template_id="county-outreach-v1", start=True)
            )
            await services.instances.transition(
                SYSTEM, inst.id, TransitionRequest(outcome="no_answer", state_updates={"tries": i}, note="hi")
            )
        await services.store.close()

    asyncio.run(go())


def _content(path: Path) -> Any:
    """A file as data: JSON parsed, JSON lines parsed line by line (PostgreSQL's JSONB keeps no key order)."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return path.read_text()


def _tree(folder: Path) -> dict[str, Any]:
    return {str(p.relative_to(folder)): _content(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    _populate(Settings(data_dir=data_dir))
    first = tmp_path / "export1"
    code, out, _ = cli(capsys, "export", str(first))
    assert code == 0, out
    assert "7 contacts, 1 templates, 7 instances, 2 tokens" in out
    # Into a fresh store, then out again: nothing lost or changed (ids, times, timelines, versions, hashes).
    other = tmp_path / "other"
    settings_env = {"CBW_DATA_DIR": str(other)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings_env.items():
            mp.setenv(key, value)
        assert cli(capsys, "import", str(first))[0] == 0
        second = tmp_path / "export2"
        assert cli(capsys, "export", str(second))[0] == 0
    assert _tree(first) == _tree(second)
    template = json.loads((first / "templates" / "county-outreach-v1.json").read_text())
    assert [v["version"] for v in template["versions"]] == ["1.0.0", "1.1.0"]
    instance = json.loads(next((first / "instances").glob("*.json")).read_text())
    assert [e["type"] for e in instance["timeline"]][:3] == ["instance_created", "instance_started", "node_entered"]


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("contacts", "{broken", "not readable JSON"),
        ("contacts", json.dumps({"id": "abc", "tenant": "x", "name": "No times"}), "created_at: Field required"),
        ("instances", "[]", "expected a JSON object"),
    ],
)
def test_import_refuses_a_bad_file_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path, kind: str, content: str, expected: str
) -> None:
    _populate(Settings(data_dir=data_dir))
    exported = tmp_path / "export"
    assert cli(capsys, "export", str(exported))[0] == 0
    bad = exported / kind / "abc.json"
    bad.write_text(content)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CBW_DATA_DIR", str(tmp_path / "fresh"))
        code, _, err = cli(capsys, "import", str(exported))
        assert code == 1
        assert str(bad) in err
        assert expected in err
        # Nothing was written: the fresh store does not even have the tenant.
        code, _, err = cli(capsys, "export", str(tmp_path / "after"))
        assert code == 1
        assert "no tenant 'default'" in err


def test_import_refuses_existing_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    _populate(Settings(data_dir=data_dir))
    exported = tmp_path / "export"
    assert cli(capsys, "export", str(exported))[0] == 0
    code, _, err = cli(capsys, "import", str(exported))
    assert code == 1
    assert "already exists" in err


def test_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cbworkflow"), "templates", "validate", str(REFERENCE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


def _export(tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> Path:
    _populate(Settings(data_dir=data_dir))
    exported = tmp_path / "export"
    assert cli(capsys, "export", str(exported))[0] == 0
    return exported


def _refused_into_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: Path, expected: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CBW_DATA_DIR", str(tmp_path / "fresh"))
        code, _, err = cli(capsys, "import", str(exported))
        assert code == 1
        assert expected in err
        code, _, err = cli(capsys, "export", str(tmp_path / "after"))
        assert "no tenant 'default'" in err  # nothing was written


def test_import_refuses_an_event_of_another_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    exported = _export(tmp_path, capsys, data_dir)
    first, second = sorted((exported / "instances").glob("*.json"))[:2]
    data = json.loads(first.read_text())
    data["timeline"].append(json.loads(second.read_text())["timeline"][0])
    first.write_text(json.dumps(data))
    _refused_into_fresh(tmp_path, capsys, exported, "belongs to another instance")


def test_import_refuses_duplicate_external_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    exported = _export(tmp_path, capsys, data_dir)
    for path in sorted((exported / "contacts").glob("*.json"))[:2]:
        data = json.loads(path.read_text())
        data["external_id"] = "crm-1"
        path.write_text(json.dumps(data))
    _refused_into_fresh(tmp_path, capsys, exported, "external_id 'crm-1' is also in")


def test_import_into_a_second_tenant_of_the_same_store_is_refused_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    exported = _export(tmp_path, capsys, data_dir)
    code, _, err = cli(capsys, "import", str(exported), "--tenant", "copy")
    assert code == 1
    assert "a token with this secret already exists" in err
    code, _, err = cli(capsys, "export", str(tmp_path / "after"), "--tenant", "copy")
    assert "no tenant 'copy'" in err


def test_export_import_through_every_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """SQLite -> JSON files -> PostgreSQL -> a new SQLite, exporting after each: nothing lost or changed (ids,
    times, timelines, versions, tokens' hashes) by any store."""
    database = PostgresDatabase()
    try:
        exported = _export(tmp_path, capsys, data_dir)
        chain = [f"json:///{tmp_path / 'json-store'}", database.url, f"sqlite:///{tmp_path / 'again' / 'cbw.db'}"]
        for step, url in enumerate(chain):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CBW_DATABASE_URL", url)
                code, _, err = cli(capsys, "import", str(exported))
                assert code == 0, (url.split(":")[0], err)
                again = tmp_path / f"export-{step}"
                assert cli(capsys, "export", str(again))[0] == 0
            assert _tree(again) == _tree(exported), url.split(":")[0]
            exported = again
    finally:
        database.drop()


@pytest.mark.parametrize(
    ("command", "executors", "said"),
    [
        ("migrate", "sms=carrier-pigeon", "unknown executor 'carrier-pigeon'"),
        ("worker", "sms=sms", "needs CBW_SMS_ACCOUNT_SID"),
        ("worker", "sms=sms,sms=webhook", "listed twice"),
    ],
)
def test_bad_executors_stop_the_program_at_start(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    command: str,
    executors: str,
    said: str,
) -> None:
    monkeypatch.setenv("CBW_EXECUTORS", executors)
    code, _, err = cli(capsys, command)
    assert code == 2
    assert err.startswith("cbworkflow: CBW_EXECUTORS: ")
    assert said in err
    assert len(err.strip().splitlines()) == 1


def test_a_second_store_in_one_data_folder_keeps_the_first_ones_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """The bootstrap token is shown once: a new store in the same folder writes its own file beside it."""
    monkeypatch.delenv("CBW_ADMIN_TOKEN", raising=False)
    assert cli(capsys, "tokens", "list")[0] == 0  # first use: a store, its tenant and a generated token
    first = (data_dir / "admin-token").read_text()
    monkeypatch.setenv("CBW_DATABASE_URL", f"json:///{data_dir / 'files'}")
    assert cli(capsys, "tokens", "list")[0] == 0
    assert (data_dir / "admin-token").read_text() == first
    second = (data_dir / "admin-token.2").read_text()
    assert second.startswith("cbw_")
    assert second != first


# ---------------------------------------------------------------------------------------------------- the edges
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"cbworkflow {version('cbworkflow')}"


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cbworkflow", "templates", "validate", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("cbworkflow: No such option: --bogus")
    assert "see 'cbworkflow templates validate --help'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_option_and_argument_has_help_and_options_show_their_default() -> None:
    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    seen = 0
    for path, command in walk(typer.main.get_command(app), "cbworkflow"):
        assert command.help, path
        for param in command.params:
            if param.name == "help":
                continue
            seen += 1
            assert param.help, f"{path} {param.name}"
            if param.param_type_name == "option" and not param.is_flag and not param.required:
                assert param.show_default, f"{path} {param.name}"
    assert seen >= 15


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve", "--bogus"], "No such option: --bogus"),
        (["tenants", "create"], "Missing argument 'NAME'"),
        (["tokens", "create", "--role", "boss"], "Invalid value for '--role': 'boss' is not one of 'superadmin'"),
        (["tokens", "create"], "Missing option '--role'"),
        (["serve", "--port", "http"], "Invalid value for '--port': 'http' is not a port: use a number from 1 to 65535"),
        (["serve", "--port", "0"], "Invalid value for '--port': '0' is not a port"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (
            ["tenants", "create", "North", "--id", "North County"],
            "Invalid value for '--id': 'North County' is not an id",
        ),
        (["tenants", "create", "x" * 201], "Invalid value for 'NAME': at most 200 characters (got 201)"),
        (["tenants", "create", "   "], "Invalid value for 'NAME': must not be empty"),
        (["tokens", "create", "--role", "staff", "--tenant", "No Such"], "Invalid value for '--tenant': 'No Such'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], data_dir: Path, args: list[str], said: str
) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith(f"cbworkflow: {said}"), err
    assert err.rstrip().endswith("--help'")
    assert len(err.strip().splitlines()) == 1
    assert not data_dir.exists()  # refused before a store was opened


def test_a_group_alone_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "tokens")
    assert code == 2
    assert "create" in out
    assert "revoke" in out


def test_an_unforeseen_failure_is_still_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CBW_DATA_DIR", str(blocker / "data"))  # cannot be made: its parent is a file
        mp.delenv("CBW_DATABASE_URL", raising=False)
        code, _, err = cli(capsys, "migrate")
    assert code == 1
    assert err.strip() == f"cbworkflow: {blocker / 'data'}: Not a directory"


def test_an_unreachable_store_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("CBW_DATABASE_URL", f"postgresql://cbw@127.0.0.1:{port}/cbw")
    code, _, err = cli(capsys, "migrate")
    assert code == 1
    assert err.startswith("cbworkflow: OperationalError: connection failed:"), err
    assert "Connection refused" in err
    assert len(err.strip().splitlines()) == 1


def test_tenants_list(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert cli(capsys, "tenants", "create", "North County", "--id", "north")[0] == 0
    code, out, _ = cli(capsys, "tenants", "list")
    assert code == 0
    rows = [line.split("  ") for line in out.strip().splitlines()]
    assert [(row[0], row[2]) for row in rows] == [("north", "North County"), (DEFAULT_TENANT, "Default")]


def _templates_of(data_dir: Path) -> list[tuple[str, str]]:
    async def go() -> list[tuple[str, str]]:
        services = await build_services(Settings(data_dir=data_dir))
        try:
            page = await services.store.read(DEFAULT_TENANT, lambda tx: tx.list_templates(None, PageRequest(50)))
            return sorted((t.id, t.version) for t in page.items)
        finally:
            await services.store.close()

    return asyncio.run(go())


def test_a_template_without_an_id_is_named_by_its_file(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path
) -> None:
    body = reference_template()
    del body["id"]
    path = tmp_path / "Door Knocks (Spring).json"
    path.write_text(json.dumps(body))
    code, out, _ = cli(capsys, "templates", "load", str(path))
    assert code == 0
    assert "loaded door-knocks-spring 1.0.0" in out
    body["nodes"]["end_success"]["end_status"] = "reached"
    path.write_text(json.dumps(body))
    code, out, _ = cli(capsys, "templates", "load", str(path))
    assert "loaded door-knocks-spring 1.1.0" in out
    assert _templates_of(data_dir) == [("door-knocks-spring", "1.1.0")]  # updated, not a second template


@pytest.mark.parametrize("stem", ["---", "日本語", "x" * 65])
def test_a_file_name_that_cannot_be_an_id_is_refused(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path, stem: str
) -> None:
    body = reference_template()
    del body["id"]
    path = tmp_path / f"{stem}.json"
    path.write_text(json.dumps(body))
    code, _, err = cli(capsys, "templates", "load", str(path))
    assert code == 1
    assert err.startswith(f'cbworkflow: {path}: the file has no "id" and its name cannot be made into one')
    assert len(err.strip().splitlines()) == 1
    assert _templates_of(data_dir) == []


def test_templates_load_a_folder(capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    (folder / "nested").mkdir(parents=True)
    for name in ("b-second", "a-first", "nested/c-not-loaded"):
        body = reference_template()
        del body["id"]
        (folder / f"{name}.json").write_text(json.dumps(body))
    (folder / "README.txt").write_text("not a template")
    code, out, _ = cli(capsys, "templates", "load", str(folder))
    assert code == 0
    assert [line.split()[2] for line in out.strip().splitlines()] == ["a-first", "b-second"]
    assert _templates_of(data_dir) == [("a-first", "1.0.0"), ("b-second", "1.0.0")]
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "templates", "load", str(tmp_path / "empty"))
    assert code == 1
    assert err.strip() == f"cbworkflow: {tmp_path / 'empty'}: the folder has no .json files"


def test_export_refuses_a_folder_in_use_and_force_replaces_only_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    exported = _export(tmp_path, capsys, data_dir)
    (exported / "NOTES.md").write_text("kept")
    (exported / "contacts" / "kept.txt").write_text("kept")
    code, _, err = cli(capsys, "export", str(exported))
    assert code == 1
    assert err.strip() == f"cbworkflow: {exported} is not empty; use --force to replace an earlier export"
    # A contact deleted after the first export does not come back through a forced second one.
    gone = sorted((exported / "contacts").glob("*.json"))[0].stem

    async def delete() -> None:
        services = await build_services(Settings(data_dir=data_dir))
        await services.contacts.delete(SYSTEM, gone, cascade=True)
        await services.store.close()

    asyncio.run(delete())
    code, _, err = cli(capsys, "export", str(exported), "--tenant", "nowhere", "--force")
    assert code == 1
    assert (exported / "contacts" / f"{gone}.json").exists()  # a mistyped tenant leaves the earlier export alone
    code, out, _ = cli(capsys, "export", str(exported), "--force")
    assert code == 0, out
    assert "6 contacts" in out
    assert not (exported / "contacts" / f"{gone}.json").exists()
    assert (exported / "NOTES.md").read_text() == "kept"
    assert (exported / "contacts" / "kept.txt").read_text() == "kept"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CBW_DATA_DIR", str(tmp_path / "fresh"))
        assert cli(capsys, "import", str(exported))[0] == 0
        again = tmp_path / "again"
        code, out, _ = cli(capsys, "export", str(again))
    assert "6 contacts" in out
    assert not (again / "contacts" / f"{gone}.json").exists()


def test_export_is_private(tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    exported = _export(tmp_path, capsys, data_dir)
    paths = [exported, *exported.rglob("*")]
    assert len(paths) > 20
    for path in paths:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_serve_on_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        code, _, err = cli(capsys, "serve", "--port", str(port))
    assert code == 1
    assert err.strip() == f"cbworkflow: port {port} on 127.0.0.1 is in use; stop what holds it or choose another --port"
    assert not data_dir.exists()
