"""The keys a contacts file has shown so far, and the first line of each, in about 20 bytes a key.

Why: the first pass of an import remembers every id, external id, email and phone it reads (by their hashes), to
report a duplicate inside the file with the line that had it first. In a `dict` each of those took about 100 bytes
(the entry and two int objects): a million-row file kept 350 MB of them, and peaked at the 500 MB line. Here a
key's 64-bit hash and its line sit in two flat arrays (open addressing, linear probing, at most 5/8 full).
"""

from __future__ import annotations

from array import array

_EMPTY = 0
_FIRST_SLOTS = 1 << 12
_MAX_FILL = 5 / 8


class SeenKeys:
    """A map of 64-bit key hashes to line numbers (0 < line < 2**32). A hash of 0 is kept as 1: the two are one
    key here, which only adds to the one-in-2**64 chance of two keys sharing a hash that hashing already has."""

    def __init__(self) -> None:
        self._hashes = array("q", bytes(8 * _FIRST_SLOTS))
        self._lines = array("I", bytes(4 * _FIRST_SLOTS))
        self._mask = _FIRST_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: int) -> int | None:
        """The line of `key`, or None when it was not seen."""
        key = key or 1
        slot = self._slot(key)
        return self._lines[slot] if self._hashes[slot] == key else None

    def setdefault(self, key: int, line: int) -> int:
        """Keep `line` for `key` unless it has a line already; the line it keeps."""
        key = key or 1
        slot = self._slot(key)
        if self._hashes[slot] == key:
            return self._lines[slot]
        self._hashes[slot] = key
        self._lines[slot] = line
        self._count += 1
        if self._count > _MAX_FILL * (self._mask + 1):
            self._grow()
        return line

    def _slot(self, key: int) -> int:
        """Where `key` is, or the empty slot where it would go."""
        hashes, mask = self._hashes, self._mask
        slot = key & mask
        while hashes[slot] != key and hashes[slot] != _EMPTY:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        hashes, lines = self._hashes, self._lines
        size = 2 * len(hashes)
        self._hashes = array("q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._mask = size - 1
        self._count = 0
        for key, line in zip(hashes, lines, strict=True):
            if key != _EMPTY:
                self.setdefault(key, line)
