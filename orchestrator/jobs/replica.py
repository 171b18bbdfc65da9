"""The `train_replica` job: claim a `started` replica, check a `user` replica's spoken consent
(doppel.replica.consent: Whisper must hear the person consent, with their name, in the consent
video or else the training video), train it through Triton (doppel.replica.training), write
`training_progress` as it goes and end the row `completed` or `error` with a message for the
person.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from typing import TYPE_CHECKING

import asyncpg

from doppel.domain import replicas
from doppel.domain.notify import Notify
from doppel.errors import ServiceUnavailable
from doppel.platform.progress import ProgressWriter
from doppel.settings import Settings
from doppel.triton import TritonClient

if TYPE_CHECKING:
    from doppel.replica import training

log = logging.getLogger(__name__)

#: Seconds between progress writes while training (the callback runs in training threads).
FLUSH_EVERY_S = 1.0

_STAGES: list[tuple[str, int]] = [
    # (message start, percent reached): prepare 0-15, mouth 15-25, voice 25-35.
    ("joining", 1),
    ("face checks", 5),
    ("normalised", 8),
    ("speech:", 11),
    ("tracked", 15),
    ("audio features and mouth model", 16),
    ("mouth model adapted", 25),
    ("base voice chosen", 28),
    ("WORLD analysis done", 29),
    ("voice learned", 35),
    ("cropping training frames", 35),
]
_STEP = re.compile(r"renderer step (\d+)/(\d+)")
_INPUTS = re.compile(r"renderer inputs (\d+)/(\d+)")
_EPOCH = re.compile(r"epoch (\d+)/(\d+)")


def progress_of(message: str) -> int | None:
    """Training's progress messages on a 0-100 scale (None: a message that says nothing new).

    Renderer steps take most of the time: 40-95; its input preparation 35-40; the bank and the
    ONNX exports after the last step fill 95-100.
    """
    if m := _STEP.search(message):
        return 40 + 55 * int(m[1]) // max(1, int(m[2]))
    if m := _INPUTS.search(message):
        return 35 + 5 * int(m[1]) // max(1, int(m[2]))
    if m := _EPOCH.search(message):
        return 29 + 6 * int(m[1]) // max(1, int(m[2]))
    if message.startswith("replica ready"):
        return 99
    text = message.strip()
    for start, percent in _STAGES:
        if text.startswith(start):
            return percent
    return None


def train_options(settings: Settings) -> training.TrainOptions:
    from doppel.replica import training

    options = training.TrainOptions(
        models_dir=settings.models_dir, stt_url=settings.triton_grpc_url
    )
    if settings.renderer_steps:
        options.renderer.steps = settings.renderer_steps
    if settings.mouth_steps:
        options.mouth_steps = settings.mouth_steps
    if settings.voice_epochs:
        from doppel.voice.conversion import TrainOptions as VoiceOptions

        options.voice_options = VoiceOptions(epochs=settings.voice_epochs, align_passes=1)
    return options


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

    def on_progress(message: str) -> None:  # called from training threads too
        log.info("replica %s: %s", replica_id, message)
        percent = progress_of(message)
        if percent is not None:
            progress.raise_to(min(percent, 99))

    async with progress:
        try:
            await training.train(
                item.train_paths,
                out,
                encode=triton.encode_audio,
                vad=triton.vad,
                options=train_options(settings),
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
