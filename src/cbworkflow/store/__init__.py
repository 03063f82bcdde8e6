"""Storage: one interface (`base.Store`, `base.Tx`, `base.SystemTx`) and a module or package per backend."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .base import Store


class UnsupportedStore(Exception):
    """The configured store URL names a backend this build cannot open."""


def open_store(settings: Settings) -> Store:
    """The store named by `CBW_DATABASE_URL` (default: SQLite in the data dir)."""
    url = settings.store_url
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")), synchronous=settings.sqlite_synchronous)
    if url.startswith(("postgresql://", "postgresql+")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("json:///"):
        from .files import JsonFileStore

        return JsonFileStore(Path(url.removeprefix("json:///")))
    raise UnsupportedStore(f"CBW_DATABASE_URL: the store {url.split(':', 1)[0]!r} is not available in this version")
