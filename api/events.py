"""A doppel.platform.feeds feed as server-sent events (`GET /v2/videos/{id}/events` and
replicas').
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from doppel.platform.feeds import Event


async def sse(
    feed: AsyncIterator[Event[Any]], gone: dict[str, str]
) -> AsyncIterator[ServerSentEventMessage]:
    """Each change as one `data:` line of the same JSON the `GET` returns, keep-alives as
    comments, and `gone` as the last event when the resource is deleted while watched.
    """
    async for event in feed:
        if event.kind == "change":
            yield ServerSentEventMessage(data=msgspec.json.encode(event.snapshot).decode())
        elif event.kind == "keepalive":
            yield ServerSentEventMessage(comment="keep-alive")
        else:
            yield ServerSentEventMessage(data=msgspec.json.encode(gone).decode())
