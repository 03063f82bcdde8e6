"""File I/O and locks of the JSON-file store: atomic replaces, durable folders, and per-entity `flock` files.

A lock is `<dir>/.<name>.lock`, taken with `flock` (through portalocker) and removed while still held after use;
whoever waited on the removed file sees it is an orphan and takes the new one.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

import portalocker

from ...errors import StoreError


def encode(doc: Any, *, pretty: bool = True) -> bytes:
    text = json.dumps(doc, indent=2 if pretty else None, ensure_ascii=False, separators=None if pretty else (",", ":"))
    return (text + "\n").encode()


def read(path: Path) -> Any | None:
    """The file's JSON, or None when there is no such file."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return json.loads(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create `path` and missing parents (private), making each new entry durable in its parent."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    fsync_dir(path.parent)


def replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a reader sees the old file or the new one, never part of either."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (a lock file of a transaction running now) or already gone


def lock_file(path: Path) -> Path:
    """The lock of the entity stored at `path`."""
    return path.parent / f".{path.stem}.lock"


def try_lock(lock: Path) -> int | None:
    """Take the lock file `lock` without waiting: its descriptor, or None when someone holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            make_dirs(lock.parent)
            continue
        try:
            portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.AlreadyLocked:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file: then our lock is on an orphan, and worthless
            current = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


def wait_lock(lock: Path, deadline: float) -> int:
    """Take the lock, waiting (with jittered backoff) until the monotonic `deadline` at most."""
    delay = 0.0005
    while (fd := try_lock(lock)) is None:
        if time.monotonic() > deadline:
            raise StoreError("the store is busy (a record stayed locked too long); try again")
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.02)
    return fd


def unlock(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go: whoever waited on it retries on a new file."""
    try:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
