"""The interactions protocol's outbound envelope (Tavus's names): what the replica's side says on
a call's data channel, numbered in the order it is sent.

`{message_type: "conversation", event_type, conversation_id, properties, seq, timestamp}` plus
`turn_idx` and `inference_id` where an event belongs to a turn. `seq` rises by one per event, so
a client can order what it receives and notice a gap.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Events of the call itself (joined, shut down) and of its turns; Tavus's names.
REPLICA_JOINED = "system.replica_joined"
SHUTDOWN = "system.shutdown"


class Outbox:
    """Makes each outbound event's envelope and hands it to `send` (the data channel) and to
    `keep` (the conversation's record), in one order.
    """

    def __init__(
        self,
        conversation_id: str,
        send: Callable[[dict[str, Any]], None],
        keep: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self._send = send
        self._keep = keep
        self._seq = itertools.count(1)

    def emit(
        self,
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        turn_idx: int | None = None,
        inference_id: str | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "message_type": "conversation",
            "event_type": event_type,
            "conversation_id": self.conversation_id,
            "properties": dict(properties or {}),
            "seq": next(self._seq),
            "timestamp": time.time(),
        }
        if turn_idx is not None:
            event["turn_idx"] = turn_idx
        if inference_id is not None:
            event["inference_id"] = inference_id
        self._send(event)
        if self._keep is not None:
            self._keep(event)
        return event
