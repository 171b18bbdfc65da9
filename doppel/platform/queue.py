"""The job queue shared by the API (which enqueues) and the arq worker (which runs).

Jobs carry ids only; their inputs and state live in PostgreSQL. Each job's arq `_job_id` is
derived from the resource it works on, so enqueueing the same work twice runs it once.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.exceptions as redis_errors
from arq.connections import ArqRedis, RedisSettings, create_pool

#: arq queue (a Redis sorted set) the API writes and the worker reads.
QUEUE_NAME = "doppel:queue"
#: Key the worker refreshes while alive, so `make up` and ops can tell it is consuming.
HEARTBEAT_KEY = "doppel:worker:heartbeat"
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 15
#: `<prefix><worker id>`: each worker's own liveness key, refreshed and expiring like the
#: heartbeat. Once it has expired the worker is dead and the jobs it held are reclaimed
#: (orchestrator.recovery) instead of staying locked for arq's in-progress TTL (hours).
WORKER_KEY_PREFIX = "doppel:worker:"
#: Redis hash: arq job id -> id of the worker running it.
RUNNING_KEY = "doppel:running"
#: Seconds between two sweeps for jobs held by dead workers.
RECLAIM_EVERY_S = 10

TRANSCRIBE = "transcribe"
TRAIN_REPLICA = "train_replica"
RENDER_VIDEO = "render_video"
DELIVER_WEBHOOK = "deliver_webhook"


def serialize(obj: dict[str, Any]) -> bytes:
    """Msgpack instead of arq's default pickle: job payloads are plain data, never code."""
    return msgspec.msgpack.encode(obj)


def deserialize(data: bytes) -> dict[str, Any]:
    return dict(msgspec.msgpack.decode(data))


async def connect(redis_url: str) -> ArqRedis:
    settings = RedisSettings.from_dsn(redis_url)
    settings.conn_retries = 1
    return await create_pool(
        settings,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


def job_id(function: str, resource_id: object) -> str:
    return f"{function}:{resource_id}"


async def enqueue(redis: ArqRedis, function: str, resource_id: object) -> bool:
    """Queue `function(resource_id)`; False when a job for that resource is already known.

    A queue that cannot be reached raises the built-in `ConnectionError`: redis-py's own
    connection errors are not subclasses of it, and callers undo their row on that one.
    """
    try:
        job = await redis.enqueue_job(
            function,
            str(resource_id),
            _job_id=job_id(function, resource_id),
            _queue_name=QUEUE_NAME,
        )
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise ConnectionError(f"the job queue cannot be reached: {exc}") from exc
    return job is not None
