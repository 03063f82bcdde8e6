"""The SQL shared by the SQLite and PostgreSQL stores: one tenant's `Tx`, the `SystemTx`, and the `SqlStore` base."""

from __future__ import annotations

from .store import SqlStore
from .system import SqlSystemTx
from .tx import RowLocks, SqlTx

__all__ = ["RowLocks", "SqlStore", "SqlSystemTx", "SqlTx"]
