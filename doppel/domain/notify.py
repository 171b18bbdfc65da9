"""What a record tells the world when its status changes: a `Notify`, passed in by the caller.

Replicas, videos and batches change status; `doppel.domain.webhooks.Notifier` turns each change
into a signed webhook. The records depend on this Protocol, not on the webhooks module, so the
webhook body (built from `doppel.domain.views`, which reads the records) makes no import circle.
`None` where a `Notify` is taken means no webhooks (the operator CLI, tests that do not care).
"""

from __future__ import annotations

import uuid
from typing import Literal, Protocol

import asyncpg

#: The objects whose status changes are announced.
Kind = Literal["replica", "video"]


class Notify(Protocol):
    async def changed(self, pool: asyncpg.Pool, kind: Kind, object_id: str) -> uuid.UUID | None:
        """Announce `object_id`'s new status; never raises (the status change stands)."""
        ...
