"""Hearing that events were committed: the wake-up of everything that reads the outbox (the live stream, the
webhook fan-out), in this process and from others.

The outbox table is the truth; this only says "look again". Three sources feed it:
- this process's own commits (`Store.on_commit`), at once;
- PostgreSQL: `LISTEN` on the channel each committing transaction notifies (delivered only when it commits), on
  a connection of its own in a thread; reconnected when it drops;
- every store: a poll of each tenant's last sequence (`SystemTx.sequence_heads`), every `poll_interval` (SQLite
  and the JSON store have no notifications; on PostgreSQL it covers a listener that was down).
A reader asks `head(tenant)` for the last sequence known and `wait(timeout)` for the next change anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from ..store.base import Store

log = logging.getLogger("cbworkflow.outbox")


class OutboxSignal:
    def __init__(self, store: Store, *, poll_interval: float = 1.0) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._heads: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        # Heads committed by store threads wait here for the loop. They wake it (through a pipe, a context switch
        # that under load cost as much as a statement) only while someone waits, once however many commits come
        # meanwhile; otherwise the next reader takes them (`head`, `wait`).
        self._handed: dict[str, int] = {}
        self._handing = False
        self._waiting = 0
        self._hand_lock = threading.Lock()
        store.on_commit(self._from_any_thread)

    # ------------------------------------------------------------------ what readers use
    def head(self, tenant: str) -> int:
        """The last sequence of `tenant` this process knows committed (0 when none, or not heard of yet). On the
        event loop."""
        self._take_handed()
        return self._heads.get(tenant, 0)

    async def wait(self, timeout: float) -> bool:
        """Until new events are committed anywhere (true), or `timeout` seconds pass (false)."""
        with self._hand_lock:
            self._waiting += 1  # from here on, a commit wakes the loop
        try:
            self._take_handed()  # what came before is known, not waited for
            changed = self._changed
            await asyncio.wait_for(changed.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._hand_lock:
                self._waiting -= 1

    async def wait_past(self, tenant: str, seen: int, timeout: float) -> bool:
        """Until `tenant` is known to have a sequence above `seen` (true at once if it is already), or `timeout`
        seconds pass (false). What a reader calls after reading up to `seen`: nothing committed meanwhile is missed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.head(tenant) <= seen:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await self.wait(left):
                return self.head(tenant) > seen
        return True

    # ------------------------------------------------------------------ feeding it
    def advance(self, heads: dict[str, int]) -> None:
        """Learn of sequences; wake every waiter if any is new. On the event loop."""
        moved = False
        for tenant, last in heads.items():
            if last > self._heads.get(tenant, 0):
                self._heads[tenant] = last
                moved = True
        if moved:
            self._changed.set()
            self._changed = asyncio.Event()

    def _from_any_thread(self, heads: dict[str, int]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a store thread: no loop runs here
            running = None
        if running is loop:
            self.advance(heads)
            return
        with self._hand_lock:
            for tenant, last in heads.items():
                if last > self._handed.get(tenant, 0):
                    self._handed[tenant] = last
            if self._handing or not self._waiting:
                return  # a hand-off on its way carries these too; or nobody waits, and readers take them
            self._handing = True
        try:
            loop.call_soon_threadsafe(self._take_handed)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _take_handed(self) -> None:
        with self._hand_lock:
            heads, self._handed, self._handing = self._handed, {}, False
        self.advance(heads)

    async def start(self) -> None:
        """Begin hearing: take the heads as they are, then poll (and listen, on PostgreSQL)."""
        self._loop = asyncio.get_running_loop()
        self.advance(await self.store.system_read(lambda tx: tx.sequence_heads()))
        self._tasks.append(asyncio.create_task(self._poll(), name="cbw-outbox-poll"))
        listen = getattr(self.store, "listen_for_commits", None)  # a store that hears other processes (PostgreSQL)
        if callable(listen):
            self._listener = threading.Thread(
                target=self._listen, args=(listen,), name="cbw-outbox-listen", daemon=True
            )
            self._listener.start()

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # the poll's errors were logged already
                pass
        self._tasks.clear()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5.0)
            self._listener = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.advance(await self.store.system_read(lambda tx: tx.sequence_heads()))
            except Exception as exc:  # the store is down for a moment: try again next time
                log.warning("outbox: could not read the event sequences: %s", exc)

    def _listen(self, listen: Callable[[Callable[[dict[str, int]], None], threading.Event], None]) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                listen(self._from_any_thread, self._stop)
                delay = 0.5
            except Exception as exc:  # dropped: the poll covers the gap; reconnect with a growing pause
                if self._stop.is_set():
                    return
                log.warning("outbox: the connection that listens for other processes' events was lost (%s)", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
