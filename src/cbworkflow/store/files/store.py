"""`JsonFileStore`: runs transactions over the files, again from the start whenever a lock is busy or a dead
process's commit must be replayed first."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

from ...errors import StoreError
from ..base import SnapshotCache, Store, SystemTx, Tx
from . import disk
from .journal import Journal
from .layout import FORMAT, Layout
from .system_tx import FileSystemTx
from .tenant_tx import FileTx
from .transaction import Busy, FileTransaction, Interrupted, Stamps

T = TypeVar("T")
X = TypeVar("X")


class JsonFileStore(Store):
    def __init__(self, root: Path, *, busy_timeout_s: float = 30.0, threads: int = 8) -> None:
        self.root = root.absolute()
        self.layout = Layout(self.root)
        self.journal = Journal(self.root, self.layout.journal, busy_timeout_s)
        self.snapshots = SnapshotCache()
        self._stamps = Stamps()
        self._writers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cbw-json-writer")
        self._readers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cbw-json-reader")

    def describe(self) -> str:
        return f"json:///{self.root}"

    def threads(self, writing: bool) -> Executor:
        return self._writers if writing else self._readers

    def recover(self) -> int:
        """Replay every journal left by a dead process; returns how many."""
        return self.journal.recover()

    # ------------------------------------------------------------------ transactions
    def _run(self, bind: Callable[[FileTransaction], X], fn: Callable[[X], T], writing: bool) -> T:
        deadline = self.journal.deadline()
        while True:
            if self.journal.interrupted():
                self.journal.recover()
            txn = FileTransaction(self.journal, self._stamps, writing=writing)
            try:
                result = fn(bind(txn))
                if writing:
                    txn.commit()
                    if txn.heads:
                        self._committed(dict(txn.heads))
                return result
            except Busy as busy:
                txn.release()
                if time.monotonic() > deadline:
                    raise StoreError("the store is busy (records stayed locked too long); try again") from None
                disk.unlock(busy.lock, disk.wait_lock(busy.lock, deadline))  # wait holding nothing, then run again
            except Interrupted:
                txn.release()
                self.journal.recover()
            except OSError as exc:
                raise StoreError(f"the file store failed: {exc.strerror or exc}") from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a file edited by hand, and badly
                raise StoreError(f"a file in the store is not valid JSON: {exc}") from exc
            finally:
                txn.release()

    def run_tenant(self, tenant: str, fn: Callable[[Tx], T], writing: bool) -> T:
        return self._run(lambda txn: FileTx(txn, self.layout, self.snapshots, tenant), fn, writing)

    def run_system(self, fn: Callable[[SystemTx], T], writing: bool) -> T:
        return self._run(lambda txn: FileSystemTx(txn, self.layout, self.snapshots), fn, writing)

    def migrate_sync(self) -> list[int]:
        disk.make_dirs(self.root)
        self.root.chmod(0o700)
        marker = self.layout.marker
        lock = self.root / ".store.lock"
        fd = disk.wait_lock(lock, self.journal.deadline())
        try:
            found = disk.read(marker)
            if found is not None:
                if found.get("format", 0) > FORMAT:
                    raise StoreError(f"{self.root} was written by a newer cbworkflow (format {found['format']})")
                applied = []
                if found.get("format", 0) < 2:
                    self.journal.recover()
                    for home in self.layout.tenant_dirs():
                        self.run_tenant(home.name, lambda tx: cast(FileTx, tx).count_stored(), writing=True)
                    applied.append(2)
                if applied:
                    self.journal.apply([(marker, disk.encode({"kind": "cbworkflow-json-store", "format": FORMAT}))])
            else:
                self.journal.apply([(marker, disk.encode({"kind": "cbworkflow-json-store", "format": FORMAT}))])
                applied = [FORMAT]
        finally:
            disk.unlock(lock, fd)
        self.journal.recover()
        return applied

    def ping_sync(self) -> None:
        if not os.access(self.layout.marker, os.R_OK):
            raise StoreError(f"the file store at {self.root} cannot be read")

    async def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)
