"""One transaction of the JSON-file store: the entity locks it holds and the changes it keeps until commit.

A lock is taken blocking only when the transaction holds no other; otherwise it is tried, and a busy lock makes
the transaction let go of everything (`Busy`), wait for that lock, and run again from the start (its function
has no side effects), so transactions can never deadlock. Reads take no locks: each file is read whole and
valid, but a read spanning files is not one snapshot.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import disk
from .journal import Journal

Doc = dict[str, Any]


class Busy(Exception):
    """A lock another transaction holds: let go of everything, wait for it, run again."""

    def __init__(self, lock: Path) -> None:
        self.lock = lock


class Interrupted(Exception):
    """A journal left by a process that died: replay it, then run again."""


class Stamps:
    """Numbers larger than any this process gave before: nanoseconds since the epoch, made unique."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


class FileTransaction:
    def __init__(self, journal: Journal, stamps: Stamps, *, writing: bool) -> None:
        self.journal = journal
        self.stamps = stamps
        self.writing = writing
        self.locks: dict[Path, int] = {}
        self.seen: dict[Path, Any | None] = {}  # files read under their lock
        self.pending: dict[Path, Any | None] = {}  # new content; None deletes the file
        self.after_commit: list[Callable[[], None]] = []
        self.heads: dict[str, int] = {}  # tenant → last event sequence this transaction wrote (the outbox)

    def _lock(self, path: Path) -> None:
        lock = disk.lock_file(path)
        if lock in self.locks:
            return
        if self.locks:
            fd = disk.try_lock(lock)
            if fd is None:
                raise Busy(lock)
        else:  # holding nothing, waiting cannot deadlock
            fd = disk.wait_lock(lock, self.journal.deadline())
        self.locks[lock] = fd

    def get(self, path: Path) -> Any | None:
        """The file's content as this transaction sees it; in a write, locked first."""
        if path in self.pending:
            return self.pending[path]
        if not self.writing:
            return disk.read(path)
        self._lock(path)
        if path not in self.seen:
            self.seen[path] = disk.read(path)
        return self.seen[path]

    def peek(self, path: Path) -> Any | None:
        """The content without locking it (list scans and checks that need no lock)."""
        if path in self.pending:
            return self.pending[path]
        if path in self.seen:
            return self.seen[path]
        return disk.read(path)

    def lock_if_free(self, path: Path) -> bool:
        """Lock `path` unless another transaction holds it (the `SKIP LOCKED` of claims): never waits."""
        lock = disk.lock_file(path)
        if lock in self.locks:
            return True
        fd = disk.try_lock(lock)
        if fd is None:
            return False
        self.locks[lock] = fd
        return True

    def put(self, path: Path, doc: Any | None) -> None:
        if not self.writing:
            raise RuntimeError("a read transaction cannot change the store")
        self._lock(path)
        self.pending[path] = doc

    def put_last(self, path: Path, doc: Any | None) -> None:
        """`put`, and write this file after every other of the commit (the outbox's head, after its events)."""
        self.put(path, doc)
        self.pending[path] = self.pending.pop(path)

    def scan(self, folder: Path) -> Iterator[Doc]:
        """Every record in `folder`, as this transaction sees it (changes made in it included)."""
        names: set[Path] = set()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.endswith(".json"):
                        continue
                    path = folder / entry.name
                    names.add(path)
                    doc = self.peek(path)
                    if doc is not None:
                        yield doc
        except FileNotFoundError:
            pass
        for path, doc in list(self.pending.items()):  # created in this transaction
            if path.parent == folder and path not in names and doc is not None:
                yield doc

    def stamp(self) -> int:
        return self.stamps.next()

    def release(self) -> None:
        for lock, fd in self.locks.items():
            disk.unlock(lock, fd)
        self.locks.clear()

    def commit(self) -> None:
        if not self.pending:
            return
        if self.journal.interrupted():  # met a dead process's half-applied commit: replay it, then run again
            raise Interrupted
        self.journal.apply([(path, None if doc is None else disk.encode(doc)) for path, doc in self.pending.items()])
        for hook in self.after_commit:
            hook()
