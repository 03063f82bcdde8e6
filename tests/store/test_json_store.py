"""What only the JSON-file store has to prove: its layout, its locks, its journal, several processes on one folder.

The behaviour it shares with the other stores is in the contract suite (test_store.py) and the API suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.errors import StoreError
from cbworkflow.models.access import Role, Token
from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.models.templates import WorkflowTemplate
from cbworkflow.services.instances import snapshot_of
from cbworkflow.store.base import ContactFilter, PageRequest, TokenRecord, Tx
from cbworkflow.store.files import JsonFileStore
from cbworkflow.store.files.disk import try_lock, unlock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODES = {
    "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
    "end": {"type": "end"},
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[JsonFileStore]:
    opened = JsonFileStore(root)
    asyncio.run(opened.migrate())
    yield opened
    asyncio.run(opened.close())


def write(store: JsonFileStore, fn: Any, tenant: str = "t1") -> Any:
    return asyncio.run(store.write(tenant, fn))


def read(store: JsonFileStore, fn: Any, tenant: str = "t1") -> Any:
    return asyncio.run(store.read(tenant, fn))


def system(store: JsonFileStore, fn: Any) -> Any:
    return asyncio.run(store.system_write(fn))


def contact(cid: str, **fields: Any) -> Contact:
    return Contact(id=cid, tenant="t1", name=fields.pop("name", "Pat"), created_at=T0, updated_at=T0, **fields)


def enrol(tx: Tx, contact_id: str, instance_id: str) -> WorkflowInstance:
    template = WorkflowTemplate.model_validate(
        {"id": "tpl", "tenant": tx.tenant, "name": "T", "start_node": "call", "nodes": NODES}
        | {"created_at": T0, "updated_at": T0}
    )
    made = WorkflowInstance(
        id=instance_id,
        tenant=tx.tenant,
        contact_id=contact_id,
        template_id="tpl",
        template_version="1.0.0",
        start_node="call",
        status=InstanceStatus.PENDING,
        nodes=template.nodes,
        created_at=T0,
        updated_at=T0,
    )
    snapshot = snapshot_of(tx.tenant, "call", NODES)
    tx.put_snapshot(snapshot)
    tx.insert_instance(made, snapshot.id)
    return made


def leftovers(root: Path) -> list[str]:
    """Lock files, temp files and journals: none may outlive the transaction that made them."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith((".lock", ".tmp")) or p.parent.name == ".journal")
    )


# ---------------------------------------------------------------------------------------------- layout
def test_one_pretty_json_file_per_entity_in_the_tenants_folder(store: JsonFileStore, root: Path) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1", email="pat@example.org", tags=["vol"])))
    write(store, lambda tx: enrol(tx, "c1", "i1"))
    text = (root / "t1" / "contacts" / "c1.json").read_text()
    assert text.startswith("{\n  ")  # pretty-printed, for people and for diffs
    doc = json.loads(text)
    assert (doc["id"], doc["email"], doc["tags"]) == ("c1", "pat@example.org", ["vol"])
    instance = json.loads((root / "t1" / "instances" / "i1.json").read_text())
    assert (instance["contact_id"], instance["status"], instance["timeline"]) == ("c1", "pending", [])
    assert {p.name for p in (root / "t1").iterdir()} >= {"contacts", "instances", "snapshots", "contact-instances"}


def test_files_and_folders_are_private(store: JsonFileStore, root: Path) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1")))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "t1" / "contacts").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "t1" / "contacts" / "c1.json").stat().st_mode) == 0o600


def test_no_lock_temp_or_journal_file_outlives_its_transaction(store: JsonFileStore, root: Path) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1", external_id="crm-1")))
    write(store, lambda tx: enrol(tx, "c1", "i1"))
    write(store, lambda tx: tx.update_contact(contact("c1", external_id="crm-2")))
    record = TokenRecord(Token(id="k1", tenant="t1", role=Role.ADMIN, created_at=T0), "ab" * 32)
    write(store, lambda tx: tx.insert_token(record))
    write(store, lambda tx: tx.delete_instance("i1"))
    assert leftovers(root) == []


def test_an_external_id_moves_with_its_contact(store: JsonFileStore) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1", external_id="crm-1")))
    write(store, lambda tx: tx.update_contact(contact("c1", external_id="crm-2")))
    assert read(store, lambda tx: tx.get_contact_by_external_id("crm-1")) is None
    assert read(store, lambda tx: tx.get_contact_by_external_id("crm-2")).id == "c1"
    write(store, lambda tx: tx.insert_contact(contact("c2", external_id="crm-1")))  # free again


def test_a_hand_broken_file_is_a_store_error_not_a_crash(store: JsonFileStore, root: Path) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1")))
    (root / "t1" / "contacts" / "c1.json").write_text("{ not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        read(store, lambda tx: tx.get_contact("c1"))


def test_ids_that_cannot_be_file_names_name_nothing(store: JsonFileStore) -> None:
    for bad in ("../t2/contacts/x", ".hidden", "a/b", "", "x" * 300):
        assert read(store, lambda tx, b=bad: tx.get_contact(b)) is None
        assert read(store, lambda tx, b=bad: tx.get_instance(b)) is None


# ---------------------------------------------------------------------------------------------- the journal
CRASH_DURING_COMMIT = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_json_store import contact, enrol
    from cbworkflow.store.files import JsonFileStore, disk

    real_replace = disk.replace
    written = []

    def replace_then_die(path, data):
        real_replace(path, data)
        written.append(path)
        if path.parent.name != ".journal" and len(written) == 2:  # the journal, then one file of three
            os._exit(9)

    store = JsonFileStore(Path(sys.argv[1]))
    asyncio.run(store.migrate())
    asyncio.run(store.write("t1", lambda tx: tx.insert_contact(contact("c1"))))
    disk.replace = replace_then_die
    asyncio.run(store.write("t1", lambda tx: enrol(tx, "c1", "i1")))
    """
)


def crash_during_commit(root: Path) -> None:
    """A process killed after its journal and the first of three files of a commit were written."""
    done = subprocess.run(
        [sys.executable, "-c", CRASH_DURING_COMMIT, str(root), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr
    assert len(list((root / ".journal").glob("*.json"))) == 1


@pytest.mark.parametrize("reopen", [True, False], ids=["on-start", "in-a-running-process"])
def test_a_commit_cut_short_is_completed_before_anyone_reads_past_it(root: Path, reopen: bool) -> None:
    running = JsonFileStore(root)
    asyncio.run(running.migrate())
    crash_during_commit(root)
    # Half applied on disk: the frozen nodes are written, the instance and the contact's link to it are not.
    assert len(list((root / "t1" / "snapshots").glob("*.json"))) == 1
    assert not (root / "t1" / "instances" / "i1.json").exists()
    assert not (root / "t1" / "contact-instances" / "c1.json").exists()
    store = JsonFileStore(root) if reopen else running
    if reopen:
        asyncio.run(store.migrate())
    try:
        got = read(store, lambda tx: tx.get_contact("c1"))
        assert got.workflow_instance_ids == ["i1"]
        assert read(store, lambda tx: tx.get_instance("i1")).contact_id == "c1"
        assert leftovers(root) == []
    finally:
        asyncio.run(store.close())
        if reopen:
            asyncio.run(running.close())


# ---------------------------------------------------------------------------------------------- processes
ADD_TAGS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from cbworkflow.store.files import JsonFileStore

    store = JsonFileStore(Path(sys.argv[1]))
    prefix = sys.argv[2]

    def add(tag):
        def fn(tx):
            current = tx.get_contact("c1")
            tx.update_contact(current.model_copy(update={"tags": [*current.tags, tag]}))
        return fn

    async def main():
        await asyncio.gather(*(store.write("t1", add(f"{prefix}{n}")) for n in range(50)))
        await store.close()

    asyncio.run(main())
    """
)


def test_two_processes_adding_tags_to_one_contact_lose_none(store: JsonFileStore, root: Path) -> None:
    write(store, lambda tx: tx.insert_contact(contact("c1")))
    workers = [
        subprocess.Popen([sys.executable, "-c", ADD_TAGS, str(root), prefix], stderr=subprocess.PIPE, text=True)
        for prefix in ("a", "b")
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=120)
        assert worker.returncode == 0, errors
    tags = read(store, lambda tx: tx.get_contact("c1")).tags
    assert sorted(tags) == sorted([f"a{n}" for n in range(50)] + [f"b{n}" for n in range(50)])
    assert leftovers(root) == []


def test_list_pages_scan_but_hold_one_page(store: JsonFileStore) -> None:
    def insert_all(tx: Tx) -> None:
        for n in range(120):
            tx.insert_contact(contact(f"c{n}", tags=["even" if n % 2 == 0 else "odd"]))

    write(store, insert_all)
    seen: list[str] = []
    cursor = None
    while True:
        page = read(store, lambda tx, c=cursor: tx.list_contacts(ContactFilter(tags=["even"]), PageRequest(7, c)))
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"c{n}" for n in range(118, -1, -2)]  # same created_at: newest stored first


def test_a_lock_held_elsewhere_makes_a_writer_wait_not_fail(store: JsonFileStore, root: Path) -> None:
    """A transaction that meets a held lock waits for it, then goes on."""
    write(store, lambda tx: tx.insert_contact(contact("c1")))
    lock = root / "t1" / "contacts" / ".c1.lock"
    fd = try_lock(lock)
    assert fd is not None
    writer = threading.Thread(target=write, args=(store, lambda tx: tx.update_contact(contact("c1", name="Waited"))))
    writer.start()
    writer.join(timeout=0.3)
    assert writer.is_alive()  # held by us, so it cannot have written
    assert read(store, lambda tx: tx.get_contact("c1")).name == "Pat"
    unlock(lock, fd)
    writer.join(timeout=30)
    assert read(store, lambda tx: tx.get_contact("c1")).name == "Waited"
    assert not os.path.exists(lock)


def test_due_work_is_listed_by_wake_time_without_reading_instances(store: JsonFileStore, root: Path) -> None:
    """The worker's questions read `.due/` names only; an entry follows its instance's wake time and status."""
    from datetime import timedelta

    def due_names() -> list[str]:
        folder = root / ".due"
        return sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []

    write(store, lambda tx: tx.insert_contact(contact("c1")))
    made = write(store, lambda tx: enrol(tx, "c1", "i1"))
    assert due_names() == []
    later = T0 + timedelta(days=3)
    waiting = made.model_copy(update={"status": InstanceStatus.WAITING, "wake_at": later, "revision": 1})
    write(store, lambda tx: tx.update_instance(waiting))
    [entry] = due_names()
    assert entry.endswith(".t1.i1.json")
    assert system(store, lambda stx: stx.next_wake(T0)) == later
    paused = waiting.model_copy(update={"status": InstanceStatus.PAUSED, "revision": 2})
    write(store, lambda tx: tx.update_instance(paused))
    assert due_names() == []  # a paused instance is not due
    resumed = paused.model_copy(update={"status": InstanceStatus.WAITING, "revision": 3})
    write(store, lambda tx: tx.update_instance(resumed))
    claimed = system(store, lambda stx: stx.claim_due(later, "w1", later + timedelta(minutes=5), 10))
    assert [w.instance_id for w in claimed] == ["i1"]
    write(store, lambda tx: tx.delete_instance("i1"))
    assert due_names() == []
    assert leftovers(root) == []


def test_stray_or_hostile_files_in_the_store_do_not_reach_outside_it(store: JsonFileStore, root: Path) -> None:
    (root / ".due").mkdir(exist_ok=True)
    (root / ".due" / "notes.txt").write_text("left here by someone")
    (root / ".due" / "00000000000000001.t1.x.y.json").write_text("{}")  # an id that cannot be a file name
    assert system(store, lambda stx: stx.next_wake(T0)) is None  # ignored, not a crash
    outside = root.parent / "outside.json"
    outside.write_text("{}")
    journal = root / ".journal" / "forged.json"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps([{"path": "../outside.json", "content": None}]))
    with pytest.raises(StoreError, match="outside the store"):
        store.recover()
    assert outside.exists()
