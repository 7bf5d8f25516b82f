"""Requests waiting for a rendition to change (blocking reload, hinted parts).

Each change sets an ``asyncio.Event`` that the waiters sleep on: no polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ChangeSignal:
    """Wakes everyone waiting on one rendition whenever it changes."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        # Everyone waiting holds the old event; swapping first means a waiter that re-checks
        # and waits again sleeps on the new one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Sleep until ``ready()`` holds after a change, at most ``timeout`` s; no polling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return ready()
        return True
