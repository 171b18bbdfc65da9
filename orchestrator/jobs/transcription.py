"""The `transcribe` job: claim a queued transcription, decode its stored upload
(doppel.audio.media), transcribe it through Triton's `stt` model and record the transcript or
the reason it failed.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg

from doppel.audio import media
from doppel.domain import transcriptions
from doppel.errors import ServiceUnavailable
from doppel.triton import TritonClient

log = logging.getLogger(__name__)


async def process(pool: asyncpg.Pool, triton: TritonClient, transcription_id: uuid.UUID) -> str:
    """Transcribe a claimed row and record the outcome; returns the status.

    `ServiceUnavailable` propagates (the job is retried later); anything wrong with the input
    fails the transcription with a reason.
    """
    item = await transcriptions.claim(pool, transcription_id)
    if item is None:
        return "skipped"
    path = await transcriptions.audio_path(pool, item.id)
    try:
        audio = await media.decode_audio(path)
        media.require_speech_candidate(audio)
        doc = await triton.transcribe(audio, language=item.language)
    except ServiceUnavailable:
        await transcriptions.requeue(pool, item.id)
        raise
    except Exception as exc:
        reason = getattr(exc, "message", None) or f"Transcription failed: {exc}"
        log.warning("transcription %s failed: %s", item.id, reason)
        await transcriptions.fail(pool, item.id, reason)
        return "failed"
    await transcriptions.finish(pool, item.id, doc)
    return "completed"
