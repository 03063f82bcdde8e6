"""The journal: how a commit that touches several files is applied whole or not at all, even across kill -9.

A commit of several files first writes them all into one journal file (atomically, under the journal's own
lock), applies them, then deletes the journal. A process killed half way leaves a journal whose lock nobody
holds; the next transaction that meets it replays it, under the locks of the files it names, before going on.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from ...errors import StoreError
from . import disk

Writes = Sequence[tuple[Path, bytes | None]]  # new content per file; None deletes the file


class Journal:
    def __init__(self, root: Path, folder: Path, busy_timeout_s: float) -> None:
        self.root = root
        self.folder = folder
        self.busy_timeout_s = busy_timeout_s

    def deadline(self) -> float:
        """How long from now a lock may be waited for (monotonic)."""
        return time.monotonic() + self.busy_timeout_s

    def apply(self, writes: Writes) -> None:
        """Make `writes` durable, all or nothing: one file is replaced atomically; several go through a journal."""
        if len(writes) == 1:
            apply_now(writes)
            return
        journal_id = secrets.token_hex(8)
        lock = self.folder / f".{journal_id}.lock"
        fd = disk.wait_lock(lock, self.deadline())  # held while the journal is live: others see it is not orphaned
        try:
            journal = self.folder / f"{journal_id}.json"
            entries = [
                {"path": str(path.relative_to(self.root)), "content": None if data is None else data.decode()}
                for path, data in writes
            ]
            disk.replace(journal, disk.encode(entries, pretty=False))
            disk.fsync_dir(self.folder)
            apply_now(writes)
            journal.unlink()
            disk.fsync_dir(self.folder)
        finally:
            disk.unlock(lock, fd)

    def _journals(self) -> list[Path]:
        try:
            with os.scandir(self.folder) as entries:
                return [self.folder / e.name for e in entries if e.name.endswith(".json") and e.name[0] != "."]
        except FileNotFoundError:
            return []

    def interrupted(self) -> bool:
        """Whether a journal is left by a commit whose process died (nobody holds its lock)."""
        for journal in self._journals():
            lock = journal.parent / f".{journal.stem}.lock"
            fd = disk.try_lock(lock)
            if fd is not None:
                disk.unlock(lock, fd)
                if journal.exists():
                    return True
        return False

    def _inside(self, relative: str) -> Path:
        """A journal's path, refused unless it stays inside the store (a journal is only ever written by us)."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise StoreError(f"a journal in {self.folder} names a file outside the store: {relative[:80]!r}")
        return self.root / relative

    def recover(self) -> int:
        """Replay every journal left by a dead process, under the locks of the files it names; returns how many."""
        replayed = 0
        for journal in self._journals():
            lock = journal.parent / f".{journal.stem}.lock"
            fd = disk.wait_lock(lock, self.deadline())  # a live commit holds it until its journal is gone
            held: dict[Path, int] = {}
            try:
                try:
                    entries = json.loads(journal.read_bytes())
                except FileNotFoundError:
                    continue
                writes = [
                    (self._inside(entry["path"]), None if entry["content"] is None else entry["content"].encode())
                    for entry in entries
                ]
                for path, _ in sorted(writes):  # one order for every recovery: two of them cannot deadlock
                    file_lock = disk.lock_file(path)
                    if file_lock not in held:
                        held[file_lock] = disk.wait_lock(file_lock, self.deadline())
                apply_now(writes)
                journal.unlink()
                disk.fsync_dir(self.folder)
                replayed += 1
            finally:
                for file_lock, file_fd in held.items():
                    disk.unlock(file_lock, file_fd)
                disk.unlock(lock, fd)
        return replayed


def apply_now(writes: Writes) -> None:
    """Write (or delete) each file atomically, then make the folders durable."""
    folders: set[Path] = set()
    for path, data in writes:
        if data is None:
            path.unlink(missing_ok=True)
        else:
            disk.make_dirs(path.parent)
            disk.replace(path, data)
        folders.add(path.parent)
    for folder in folders:
        disk.fsync_dir(folder)
