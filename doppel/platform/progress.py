"""Typed progress from the engine, and a job's progress percentage written to PostgreSQL in the
background while the job runs.

The engine (training, rendering) reports `Progress(stage, done, total)` values; the job that runs
it maps them onto its own 0-100 scale. No progress travels as log text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from types import TracebackType


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """`done` of `total` units of one named `stage` (total 0: a stage with no count)."""

    stage: str
    done: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


#: What the engine calls with each `Progress`; any thread may call it.
Report = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """A `Report` for callers that do not follow progress."""


class ProgressWriter:
    """Progress raised by callbacks (from any thread; it only ever goes up) and written by
    `write` at most once every `every_s` while the `async with` block runs, only when it
    changed: a render reports every chunk, the database sees about one update a second.
    """

    def __init__(self, write: Callable[[int], Awaitable[object]], every_s: float = 1.0) -> None:
        self._write = write
        self.every_s = every_s
        self.percent = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    def raise_to(self, percent: int) -> None:
        self.percent = max(self.percent, percent)

    async def flush(self) -> None:
        if self.percent != self._written:
            self._written = self.percent
            await self._write(self._written)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.flush()

    async def __aenter__(self) -> ProgressWriter:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
