"""A pooled PostgreSQL connection is tried before use only when it has rested a while.

Why: SQLAlchemy's `pool_pre_ping` sends `SELECT 1` before every transaction, one round trip more for each step
(0 to 17% of an in-process transition on PostgreSQL, median 3%: docs/performance.md). What it guards against, a
connection the server dropped (a restart, a failover, an idle timeout), happens while a connection lies unused in
the pool: a restart takes seconds, and a connection used meanwhile fails, which makes SQLAlchemy recycle every
connection older than the failure (and the store runs that transaction again, `sql/store.py`). So a connection
back in use within `RESTED_S` is used as it is, and one that rested longer is tried first; a dead one is replaced
by a fresh connection (the pool's checkout tries up to three times), never handed out.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

RESTED_S = 1.0
_RESTED_SINCE = "cbw_rested_since"


def ping_rested_connections(engine: Engine, rested_s: float = RESTED_S) -> None:
    """Try each connection `engine`'s pool hands out that has rested over `rested_s` seconds since its last use."""

    @event.listens_for(engine, "checkin")
    def rested(dbapi_connection: Any, record: Any) -> None:
        record.info[_RESTED_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def try_if_rested(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_RESTED_SINCE)  # none on a fresh connection: nothing to try
        if since is None or time.monotonic() - since < rested_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(f"a pooled connection was dropped while it rested: {error}") from error
