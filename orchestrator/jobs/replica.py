"""The `train_replica` job: claim a `started` replica, check a `user` replica's spoken consent
(doppel.replica.consent: Whisper must hear the person consent, with their name, in the consent
video or else the training video), train it through Triton (doppel.replica.training), write
`training_progress` as it goes and end the row `completed` or `error` with a message for the
person.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

import asyncpg

from doppel.domain import replicas
from doppel.domain.notify import Notify
from doppel.errors import ServiceUnavailable
from doppel.platform.progress import Progress, ProgressWriter
from doppel.settings import Settings
from doppel.triton import TritonClient

log = logging.getLogger(__name__)

#: Seconds between progress writes while training (the callback runs in training threads).
FLUSH_EVERY_S = 1.0

#: Training's stages reached (doppel.replica.training) and the percent each means:
#: prepare 0-15, mouth 15-25, voice 25-35.
_REACHED = {"join": 1, "features": 16, "mouth": 25, "voice": 35, "crop": 35, "ready": 99}
#: The "prepare" stage's steps done (face checks, normalised, speech found, tracked).
_PREPARED = (0, 5, 8, 11, 15)


def percent_of(p: Progress) -> int | None:
    """Training's progress on a 0-100 scale (None: a stage that says nothing new).

    Renderer steps take most of the time: 40-95; its input preparation 35-40; the bank and the
    ONNX exports after the last step fill 95-100.
    """
    if p.stage == "renderer":
        return 40 + 55 * p.done // max(1, p.total)
    if p.stage == "renderer inputs":
        return 35 + 5 * p.done // max(1, p.total)
    if p.stage == "prepare":
        return _PREPARED[p.done] if 0 < p.done < len(_PREPARED) else None
    return _REACHED.get(p.stage)


async def train(
    pool: asyncpg.Pool,
    triton: TritonClient,
    settings: Settings,
    replica_id: str,
    notify: Notify | None = None,
) -> str:
    """Train a `started` replica from scratch (a run a dead worker left half done is
    discarded); returns the final status, or "skipped". `ServiceUnavailable` propagates (the job
    is retried later); any other failure ends the replica in `error` with its reason.
    """
    from doppel.replica import training

    item = await replicas.claim(pool, replica_id)
    if item is None:
        return "skipped"
    if item.replica_type == "user" and not await check_consent(pool, triton, item, notify):
        return "error"
    out = item.model_folder
    await asyncio.to_thread(shutil.rmtree, out, True)
    progress = ProgressWriter(
        lambda percent: replicas.set_progress(pool, replica_id, percent), every_s=FLUSH_EVERY_S
    )

    def on_progress(p: Progress) -> None:  # called from training threads too
        percent = percent_of(p)
        if percent is not None:
            progress.raise_to(min(percent, 99))

    async with progress:
        try:
            await training.train(
                item.train_paths,
                out,
                encode=triton.encode_audio,
                vad=triton.vad,
                options=training.TrainOptions.from_settings(settings),
                progress=on_progress,
            )
        except ServiceUnavailable:
            raise
        except Exception as exc:
            reason = getattr(exc, "message", None) or f"Training failed: {exc}"
            log.warning("replica %s failed: %s", replica_id, reason, exc_info=True)
            await replicas.fail(pool, replica_id, reason, notify)
            return "error"
    await replicas.finish(pool, replica_id, notify)
    return "completed"


async def check_consent(
    pool: asyncpg.Pool,
    triton: TritonClient,
    item: replicas.ReplicaRow,
    notify: Notify | None = None,
) -> bool:
    """Listen for the person's consent (the consent video, else the first training video) and
    record what was heard; a replica without it ends `error` quoting the transcript (False).
    `ServiceUnavailable` propagates: the job is retried.
    """
    from doppel.replica import consent

    source = item.consent_path or item.train_paths[0]
    try:
        ok, transcript, message = await consent.verify(triton, source, item.replica_name)
    except ServiceUnavailable:
        raise
    except Exception as exc:  # no audio track, unreadable, a model error: say why
        reason = getattr(exc, "message", None) or str(exc)
        message = consent.failure_message("", item.replica_name, reason)
        ok, transcript = False, ""
    await replicas.record_consent(pool, item.replica_id, transcript)
    if not ok:
        log.info("replica %s: %s", item.replica_id, message)
        await replicas.fail(pool, item.replica_id, message, notify)
    return ok
