"""Request collapsing: concurrent asks for one key share a single upstream fetch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("shopcast.edge.collapse")


class Collapser(Generic[T]):
    """One fetch per key at a time; every waiter gets its result the moment it is set.

    The fetch runs in its own task, so a waiter that goes away (viewer disconnects) neither
    cancels it nor the other waiters. Waiters that ``join`` with a callback are answered in one
    pass when the fetch completes (no task wake-up per waiter).
    """

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[T]] = {}
        self._callbacks: dict[str, list[Callable[[asyncio.Future[T]], None]]] = {}
        self.waiters = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._inflight

    def start(self, key: str, fetch: Callable[[], Awaitable[T]]) -> tuple[asyncio.Future[T], bool]:
        """The in-flight future for ``key`` (started now if none); True if it joined one."""
        future = self._inflight.get(key)
        if future is not None:
            return future, True
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        task = asyncio.ensure_future(self._run(key, fetch, future))
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)
        return future, False

    def add_waiter(self, key: str, callback: Callable[[asyncio.Future[T]], None]) -> bool:
        """Wait on the fetch in flight for ``key``, if there is one (then True)."""
        if key not in self._inflight:
            return False
        self._callbacks.setdefault(key, []).append(callback)
        self.waiters += 1
        return True

    def join(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        callback: Callable[[asyncio.Future[T]], None],
    ) -> bool:
        """Like ``start``; ``callback(future)`` runs once the fetch is done. True if it joined."""
        _, joined = self.start(key, fetch)
        self.add_waiter(key, callback)
        return joined

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, future: asyncio.Future[T]) -> T:
        self.waiters += 1
        try:
            return await asyncio.shield(future)
        finally:
            self.waiters -= 1

    async def _run(
        self, key: str, fetch: Callable[[], Awaitable[T]], future: asyncio.Future[T]
    ) -> None:
        try:
            result = await fetch()
        except asyncio.CancelledError:
            self._inflight.pop(key, None)
            future.cancel()
            self._answer(key, future)
            raise
        except Exception as exc:  # handed to the waiters, who turn it into a 502
            self._inflight.pop(key, None)
            future.set_exception(exc)
            future.exception()  # marked retrieved: a prefetch nobody waits for must not warn
            self._answer(key, future)
            return
        self._inflight.pop(key, None)
        future.set_result(result)
        self._answer(key, future)

    def _answer(self, key: str, future: asyncio.Future[T]) -> None:
        callbacks = self._callbacks.pop(key, ())
        self.waiters -= len(callbacks)
        for callback in callbacks:
            try:
                callback(future)
            except Exception:  # one waiter's failure must not leave the others unanswered
                log.exception("answering a waiter for %s", key)
