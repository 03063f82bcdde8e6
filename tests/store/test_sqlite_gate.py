"""The SQLite store's write gate: store objects (processes) on one file take turns to write, a dead process lets go
at once, reads never wait for it; and a transaction that cannot even be rolled back leaves the store usable."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_store import contact, run

from cbworkflow.errors import StoreError
from cbworkflow.store.base import Tx
from cbworkflow.store.sqlite import SQLiteStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    made = SQLiteStore(tmp_path / "shared.db")
    asyncio.run(made.migrate())
    asyncio.run(made.close())
    return tmp_path / "shared.db"


def _write_in_thread(store: SQLiteStore, cid: str) -> tuple[threading.Thread, list[Any]]:
    done: list[Any] = []

    def write() -> None:
        done.append(run(store, "a", lambda tx: tx.insert_contact(contact("a", cid=cid))))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, done


def _stored(store: SQLiteStore, cid: str) -> bool:
    return run(store, "a", lambda tx: tx.get_contact(cid), write=False) is not None


def test_a_second_store_waits_for_the_first_writer_and_reads_do_not(path: Path) -> None:
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        run(first, "a", lambda tx: tx.insert_contact(contact("a", cid="before")))
        with first._gate:  # as another process in the middle of a write
            thread, done = _write_in_thread(second, "waiting")
            assert _stored(second, "before")  # a read goes on meanwhile
            time.sleep(0.3)
            assert done == []  # the write waits for the gate
        thread.join(timeout=30)
        assert done == [None]
        assert _stored(first, "waiting")
    finally:
        asyncio.run(first.close())
        asyncio.run(second.close())


def test_the_gate_is_let_go_after_a_failed_write(path: Path) -> None:
    first, second = SQLiteStore(path), SQLiteStore(path)

    def fails(tx: Tx) -> None:
        tx.insert_contact(contact("a", cid="undone"))
        raise RuntimeError("changed my mind")

    try:
        with pytest.raises(RuntimeError):
            run(first, "a", fails)
        thread, done = _write_in_thread(second, "after")
        thread.join(timeout=30)
        assert done == [None]
        assert not _stored(second, "undone")
    finally:
        asyncio.run(first.close())
        asyncio.run(second.close())


def test_a_process_killed_while_holding_the_gate_lets_go(path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from cbworkflow.store.sqlite import SQLiteStore\n"
            "store = SQLiteStore(Path(sys.argv[1]))\n"
            "store._gate.__enter__()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    store = SQLiteStore(path)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        thread, done = _write_in_thread(store, "after-kill")
        time.sleep(0.3)
        assert done == []  # the other process holds the gate
        holder.kill()
        holder.wait(timeout=30)
        thread.join(timeout=30)
        assert done == [None]
        assert _stored(store, "after-kill")
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
        asyncio.run(store.close())


def test_the_gate_file_is_private(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        gate = path.with_name(path.name + "-writer.lock")
        assert stat.S_IMODE(gate.stat().st_mode) == 0o600
    finally:
        asyncio.run(store.close())


def test_a_transaction_that_cannot_be_rolled_back_leaves_the_store_usable(path: Path) -> None:
    """The rollback after a failed write fails too (here: the transaction was already ended under the store): the
    store lets that connection go rather than trust its state, and the next write opens a new one."""
    store = SQLiteStore(path)
    seen: list[Any] = []

    def breaks(tx: Tx) -> None:
        tx.insert_contact(contact("a", cid="lost"))
        seen.append(tx.conn)
        tx.conn.exec_driver_sql("ROLLBACK")  # the store's own ROLLBACK will now fail
        raise RuntimeError("failed after its transaction ended")

    def writes(tx: Tx) -> None:
        seen.append(tx.conn)
        tx.insert_contact(contact("a", cid="next"))

    try:
        with pytest.raises(RuntimeError, match="failed after"):
            run(store, "a", breaks)
        run(store, "a", writes)
        assert seen[0] is not seen[1]
        assert seen[0].invalidated
        assert seen[0] not in store._held
        assert _stored(store, "next")
        assert not _stored(store, "lost")
    finally:
        asyncio.run(store.close())


def test_closing_twice_leaves_other_files_alone(path: Path, tmp_path: Path) -> None:
    """The gate's file is closed once: a second close must not close the file that was given its number since."""
    store = SQLiteStore(path)
    asyncio.run(store.close())
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)  # most likely the gate's old number
    try:
        asyncio.run(store.close())
        os.fstat(other)  # still open
    finally:
        os.close(other)


def test_a_write_gives_up_after_the_busy_timeout_and_its_waiter_lets_go(path: Path) -> None:
    """Another process keeps the gate past the store's busy timeout: the write is refused as busy (503), and the
    helper that went on waiting for the gate lets go of it when it arrives, so later writes are not shut out."""
    holder, waiting = SQLiteStore(path), SQLiteStore(path, busy_timeout_s=0.5)
    try:
        with pytest.raises(StoreError):
            with holder._gate:
                run(waiting, "a", lambda tx: tx.insert_contact(contact("a", cid="refused")))
        run(waiting, "a", lambda tx: tx.insert_contact(contact("a", cid="later")))
        run(holder, "a", lambda tx: tx.insert_contact(contact("a", cid="later-too")))
        assert _stored(holder, "later")
        assert not _stored(holder, "refused")
    finally:
        asyncio.run(holder.close())
        asyncio.run(waiting.close())
