"""Transcriptions: speech-to-text requests, answered at once (the API transcribes, this records
the result) or queued for the `transcribe` job (orchestrator.jobs.transcription).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from arq.connections import ArqRedis

from doppel.errors import NotFound, ServiceUnavailable
from doppel.platform import queue
from doppel.platform.storage import LocalStorage


@dataclasses.dataclass(frozen=True)
class Transcription:
    id: uuid.UUID
    status: str
    filename: str | None
    duration_s: float | None
    language: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None


def _from_row(row: asyncpg.Record) -> Transcription:
    result = row["result"]
    return Transcription(
        id=row["id"],
        status=row["status"],
        filename=row["filename"],
        duration_s=row["duration_s"],
        language=row["language"],
        result=json.loads(result) if isinstance(result, str) else result,
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
    )


async def record_completed(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    filename: str | None,
    duration_s: float,
    doc: dict[str, Any],
) -> Transcription:
    """Record a transcription made while the caller waited, like a queued one once done."""
    row = await pool.fetchrow(
        """INSERT INTO transcriptions
               (id, tenant_id, status, filename, duration_s, language, result, completed_at)
           VALUES ($1, $2, 'completed', $3, $4, $5, $6, now())
           RETURNING *""",
        uuid.uuid4(),
        tenant_id,
        filename,
        duration_s,
        doc.get("language"),
        json.dumps(doc),
    )
    return _from_row(row)


async def enqueue(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    storage: LocalStorage,
    tenant_id: uuid.UUID,
    filename: str | None,
    data: bytes,
    duration_s: float,
    language: str | None = None,
) -> Transcription:
    """Store the upload (`duration_s` long, as decoded), record a queued transcription and hand
    it to the worker.

    If the queue cannot be reached, the row and the file are removed again and the caller gets
    `ServiceUnavailable`: nothing is left half done.
    """
    tid = uuid.uuid4()
    suffix = Path(filename or "").suffix[:16] or ".bin"
    path = storage.put(tenant_id, "transcriptions", f"{tid}{suffix}", data)
    try:
        row = await pool.fetchrow(
            """INSERT INTO transcriptions
                   (id, tenant_id, status, filename, audio_path, duration_s, language)
               VALUES ($1, $2, 'queued', $3, $4, $5, $6) RETURNING *""",
            tid,
            tenant_id,
            filename,
            str(path),
            duration_s,
            language,
        )
    except BaseException:
        storage.delete(path)
        raise
    try:
        await queue.enqueue(redis, queue.TRANSCRIBE, tid)
    except (OSError, ConnectionError, TimeoutError) as exc:
        await pool.execute("DELETE FROM transcriptions WHERE id = $1", tid)
        storage.delete(path)
        raise ServiceUnavailable("The job queue is unavailable; try again shortly.") from exc
    return _from_row(row)


async def get(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, transcription_id: uuid.UUID
) -> Transcription:
    row = await pool.fetchrow(
        "SELECT * FROM transcriptions WHERE id = $1 AND tenant_id = $2",
        transcription_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No transcription {transcription_id} exists for this API key.")
    return _from_row(row)


async def claim(pool: asyncpg.Pool, transcription_id: uuid.UUID) -> Transcription | None:
    """Mark a queued transcription as processing; None when it is already finished or gone."""
    row = await pool.fetchrow(
        """UPDATE transcriptions
           SET status = 'processing', attempts = attempts + 1, updated_at = now()
           WHERE id = $1 AND status IN ('queued', 'processing')
           RETURNING *""",
        transcription_id,
    )
    return None if row is None else _from_row(row)


async def audio_path(pool: asyncpg.Pool, transcription_id: uuid.UUID) -> Path:
    """Where a queued transcription's upload is stored."""
    path = await pool.fetchval(
        "SELECT audio_path FROM transcriptions WHERE id = $1", transcription_id
    )
    return Path(path)


async def requeue(pool: asyncpg.Pool, transcription_id: uuid.UUID) -> None:
    """Back to `queued`: the model service is down and the job is retried."""
    await pool.execute(
        "UPDATE transcriptions SET status = 'queued', updated_at = now() WHERE id = $1",
        transcription_id,
    )


async def finish(pool: asyncpg.Pool, transcription_id: uuid.UUID, doc: dict[str, Any]) -> None:
    await pool.execute(
        """UPDATE transcriptions
           SET status = 'completed', result = $2, language = $3, updated_at = now(),
               completed_at = now()
           WHERE id = $1""",
        transcription_id,
        json.dumps(doc),
        doc.get("language"),
    )


async def fail(pool: asyncpg.Pool, transcription_id: uuid.UUID, reason: str) -> None:
    await pool.execute(
        """UPDATE transcriptions SET status = 'failed', error = $2, updated_at = now(),
                  completed_at = now() WHERE id = $1""",
        transcription_id,
        reason,
    )
