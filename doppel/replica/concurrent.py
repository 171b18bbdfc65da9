"""Training steps running side by side, each timed on its own, stopped together.

Replica training (doppel.replica.training) runs its voice (a child process), mouth model and
renderer (threads) at once; this keeps them honest: timed, and never left running behind a
failure or a cancellation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Concurrent:
    """Training steps running side by side (asyncio tasks), each timed on its own; the first
    failure stops the rest (`stop` for threads, cancellation for tasks, which kills a child
    process) before it is raised, so nothing keeps running behind a failed or cancelled replica.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.seconds: dict[str, float] = {}
        #: Steps not finished yet (the renderer's thread count depends on them).
        self.running: set[str] = set()
        self._threads = 0  # worker threads still running (they outlive a cancelled task)
        self._ended = threading.Condition()

    def start(self, name: str, work: Awaitable[Any], *, timed: bool = True) -> None:
        """Run `work` as the step `name`; `timed`: its wall time is `seconds[name + "_s"]`."""

        async def run() -> Any:
            clock = time.perf_counter()
            self.running.add(name)
            try:
                return await work
            finally:
                self.running.discard(name)
                if timed:
                    self.seconds[f"{name}_s"] = round(time.perf_counter() - clock, 2)

        self.tasks[name] = asyncio.create_task(run())

    async def thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`asyncio.to_thread`, counted until the thread itself ends (`abandon` waits)."""

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._ended:
                    self._threads -= 1
                    self._ended.notify_all()

        with self._ended:
            self._threads += 1
        return await asyncio.to_thread(counted)

    async def wait(self) -> dict[str, Any]:
        """Every step's result; raises the first failure (after stopping the others)."""
        pending = set(self.tasks.values())
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    await self.abandon()
                    raise exc
        return {name: task.result() for name, task in self.tasks.items()}

    async def abandon(self) -> None:
        """Stop every step still running and return once each has: tasks are cancelled (the
        voice process killed), threads end at their next training step (`stop`).
        """
        self.stop.set()
        for task in self.tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await asyncio.to_thread(self._joined)

    def _joined(self) -> None:
        with self._ended:
            self._ended.wait_for(lambda: self._threads == 0)
