"""The arq worker: shared clients in `ctx`, one function per job kind, each running a job body
of orchestrator.jobs.

Jobs take ids; their state is in PostgreSQL. A job that finds its backing model service down
raises `Retry` with a growing delay instead of failing the user's request. Jobs a killed worker
held are taken up again by the others (orchestrator.recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Worker, func

from doppel.domain import replicas, transcriptions, videos, webhooks
from doppel.errors import ServiceUnavailable
from doppel.platform import db, queue
from doppel.platform.storage import LocalStorage
from doppel.settings import Settings
from doppel.triton import TritonClient
from orchestrator import recovery
from orchestrator.jobs import replica, transcription, video, webhook

log = logging.getLogger(__name__)

#: A job whose model service stays down this many tries fails for good (about 2.5 minutes).
MAX_TRIES = 8


async def _retrying(
    ctx: dict[str, Any],
    work: Awaitable[str],
    give_up: Callable[[str], Awaitable[None]],
    failed: str,
) -> str:
    """Run a job's `work`; while its model service is down (`ServiceUnavailable`) retry with a
    growing delay, and after MAX_TRIES record the reason through `give_up` and return `failed`.
    """
    try:
        return await work
    except ServiceUnavailable as exc:
        tries = int(ctx.get("job_try", 1))
        if tries >= MAX_TRIES:
            await give_up(f"{exc.message} (gave up after {tries} tries)")
            return failed
        raise Retry(defer=min(2**tries, 30)) from exc


async def transcribe(ctx: dict[str, Any], transcription_id: str) -> str:
    pool, tid = ctx["pool"], uuid.UUID(transcription_id)
    return await _retrying(
        ctx,
        transcription.process(pool, ctx["triton"], tid),
        lambda reason: transcriptions.fail(pool, tid, reason),
        "failed",
    )


async def train_replica(ctx: dict[str, Any], replica_id: str) -> str:
    pool, notify = ctx["pool"], ctx.get("notify")
    return await _retrying(
        ctx,
        replica.train(pool, ctx["triton"], ctx["settings"], replica_id, notify),
        lambda reason: replicas.fail(pool, replica_id, reason, notify),
        "error",
    )


async def render_video(ctx: dict[str, Any], video_id: str) -> str:
    pool, notify = ctx["pool"], ctx.get("notify")
    return await _retrying(
        ctx,
        video.render(pool, ctx["triton"], ctx["storage"], video_id, notify),
        lambda reason: videos.fail(pool, video_id, reason, notify),
        "error",
    )


async def deliver_webhook(ctx: dict[str, Any], delivery_id: str) -> str:
    """One attempt at a webhook delivery; a failed one is retried after the settings' backoff
    (the attempts are counted in PostgreSQL, not by arq).
    """
    outcome = await webhook.deliver(ctx["pool"], ctx["settings"], uuid.UUID(delivery_id))
    if outcome.retry_in is not None:
        raise Retry(defer=outcome.retry_in)
    return outcome.status


async def warm_up(triton: TritonClient) -> None:
    """Load, in the background, what a long-running worker's first render would otherwise load
    while a person waits: the rendering code and its libraries (imported in a thread) and the
    `audio_encoder`'s first inference (seconds on a cold Triton). Best effort: a failure is
    logged, and the first job loads what is missing itself.
    """
    start = time.perf_counter()
    try:
        await asyncio.to_thread(importlib.import_module, "doppel.render.video")
        await triton.encode_audio(np.zeros(16_000, np.float32))
    except Exception as exc:  # the worker runs jobs either way
        log.info("warm-up incomplete (%s): the first job loads the rest", exc)
        return
    log.info("warmed up in %.1f s", time.perf_counter() - start)


def build_worker(settings: Settings, *, burst: bool = False, **overrides: Any) -> Worker:
    """A worker for `settings`. Tests run it with `burst=True`: it returns when the queue is
    empty.
    """
    worker_id = recovery.new_worker_id()
    liveness = recovery.Liveness(settings.redis_url, worker_id, heartbeat=not burst)
    worker: Worker | None = None

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["worker_id"] = worker_id
        liveness.start()
        ctx["settings"] = settings
        ctx["pool"] = await db.create_pool(settings.database_url, max_size=4)
        ctx["triton"] = TritonClient(settings.triton_grpc_url, timeout_s=settings.triton_timeout_s)
        ctx["storage"] = LocalStorage(settings.data_dir)
        ctx["notify"] = webhooks.Notifier(ctx["redis"], settings.public_url)
        pending = await webhooks.resend_pending(ctx["pool"], ctx["redis"])
        if pending:
            log.info("re-enqueued %d pending webhook deliveries", pending)
        assert worker is not None
        timeout_s = worker.in_progress_timeout_s
        await recovery.reclaim(ctx["redis"], worker_id, timeout_s)
        if not burst:
            ctx["reclaimer"] = asyncio.create_task(
                recovery.reclaim_forever(ctx["redis"], worker_id, timeout_s)
            )
            ctx["warm"] = asyncio.create_task(warm_up(ctx["triton"]))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if "warm" in ctx:
            ctx["warm"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx["warm"]
        if "reclaimer" in ctx:
            ctx["reclaimer"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx["reclaimer"]
        await asyncio.to_thread(liveness.stop)
        await ctx["triton"].close()
        await ctx["pool"].close()

    options: dict[str, Any] = dict(
        functions=[
            func(recovery.owned(transcribe), name=queue.TRANSCRIBE, max_tries=MAX_TRIES),
            # Training a full-size replica takes hours on CPU; a render is bounded by the
            # 10-minute audio limit.
            func(
                recovery.owned(train_replica),
                name=queue.TRAIN_REPLICA,
                max_tries=MAX_TRIES,
                timeout=6 * 3600,
            ),
            func(
                recovery.owned(render_video),
                name=queue.RENDER_VIDEO,
                max_tries=MAX_TRIES,
                timeout=3600,
            ),
            # Attempts are bounded by settings.webhook_backoff_s; arq's own limit is a backstop.
            func(
                recovery.owned(deliver_webhook),
                name=queue.DELIVER_WEBHOOK,
                max_tries=len(settings.webhook_backoff_s) + 2,
                timeout=settings.webhook_timeout_s + 30,
            ),
        ],
        queue_name=queue.QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        job_serializer=queue.serialize,
        job_deserializer=queue.deserialize,
        burst=burst,
        max_jobs=4,
        # Transcribing a long file takes a while on CPU; training and rendering set their own.
        job_timeout=900,
        keep_result=3600,
        handle_signals=not burst,
    )
    options.update(overrides)
    worker = Worker(**options)
    return worker
