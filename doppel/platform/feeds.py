"""Change feeds for a job's row: what `GET .../events` streams as server-sent events.

The feed polls PostgreSQL (the source of truth) instead of listening on Redis: a poll sees
every write whoever made it (the worker, a retry after a restart, an operator's SQL), needs no
publisher anywhere, and a client that reconnects simply gets the current state first. At one
indexed primary-key read every `POLL_S` per open stream, that is cheap next to a render.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, Literal, TypeVar

S = TypeVar("S")

#: Seconds between two reads of the row: progress is written about once a second.
POLL_S = 0.5
#: Seconds of silence after which a keep-alive is sent, so proxies (nginx's default read timeout
#: is 60 s) and browsers keep an idle stream open.
KEEPALIVE_S = 15.0


@dataclasses.dataclass(frozen=True)
class Event(Generic[S]):
    """One item of a feed: a `change` (with the new snapshot), a `keepalive`, or `gone` (the row
    was deleted or can no longer be seen: the feed ends).
    """

    kind: Literal["change", "keepalive", "gone"]
    snapshot: S | None = None


async def watch(
    fetch: Callable[[], Awaitable[S | None]],
    *,
    key: Callable[[S], Hashable],
    done: Callable[[S], bool],
    poll_s: float = POLL_S,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[Event[S]]:
    """The current snapshot, then one `change` each time `key(snapshot)` differs from the last
    one sent; it returns after a snapshot for which `done` is true or when `fetch` gives None.

    The caller's cancellation (a client that disconnects) lands in the sleep between reads, so
    an abandoned feed stops at once and holds no database connection while it waits.
    """
    last: Hashable = object()
    quiet_since = time.monotonic()
    while True:
        snapshot = await fetch()
        if snapshot is None:
            yield Event("gone")
            return
        now = time.monotonic()
        current = key(snapshot)
        if current != last:
            last, quiet_since = current, now
            yield Event("change", snapshot)
            if done(snapshot):
                return
        elif now - quiet_since >= keepalive_s:
            quiet_since = now
            yield Event("keepalive")
        await asyncio.sleep(poll_s)
