"""Videos: a completed replica speaking a script or a recording, made by the `render_video` job
(orchestrator.jobs.video).

The row in `videos` is the job's state: `queued` -> `generating` (with `progress` 0-100) ->
`ready` or `error`. A video has a script or an audio input, never both; an audio input is
stored at `<data>/<tenant>/videos/<video_id>.input<suffix>` when the video is created. The job
stores `<data>/<tenant>/videos/<video_id>.mp4` and `<video_id>.jpg` (a middle frame).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import secrets
import uuid
from pathlib import Path

import asyncpg
from arq.connections import ArqRedis

from doppel.domain import replicas, sharing
from doppel.domain.notify import Notify
from doppel.errors import Conflict, InvalidMedia, InvalidRequest, NotFound, ServiceUnavailable
from doppel.platform import db, queue
from doppel.platform.storage import LocalStorage

log = logging.getLogger(__name__)

#: Longest script, in characters (about 10 minutes of speech, render's limit).
MAX_SCRIPT = 10_000
MAX_NAME = 200
#: An audio input's length: long enough to show a mouth move, at most what render takes.
MIN_AUDIO_S = 0.3
MAX_AUDIO_S = 600.0
#: Audio containers kept as the stored input's suffix; anything else is stored as `.audio`
#: (ffmpeg reads by content, the name is only a hint).
AUDIO_SUFFIXES = {
    ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".mov",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VideoRow:
    video_id: str
    tenant_id: uuid.UUID
    replica_id: str
    video_name: str | None
    #: The text spoken, or None for a video that speaks its `audio_path`.
    script: str | None
    audio_path: Path | None
    status: str
    progress: int
    error_message: str | None
    video_path: Path | None
    thumbnail_path: Path | None
    duration_s: float | None
    disclosure_mark: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    #: Opens the media and the hosted page without the API key (doppel.domain.sharing).
    share_token: str = ""


def from_row(row: asyncpg.Record) -> VideoRow:
    return VideoRow(
        video_id=row["video_id"],
        tenant_id=row["tenant_id"],
        replica_id=row["replica_id"],
        video_name=row["video_name"],
        script=row["script"],
        audio_path=Path(row["audio_path"]) if row["audio_path"] else None,
        status=row["status"],
        progress=row["progress"],
        error_message=row["error_message"],
        video_path=Path(row["video_path"]) if row["video_path"] else None,
        thumbnail_path=Path(row["thumbnail_path"]) if row["thumbnail_path"] else None,
        duration_s=row["duration_s"],
        disclosure_mark=row["disclosure_mark"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        share_token=row["share_token"],
    )


def new_id() -> str:
    return "v" + secrets.token_hex(6)


def check_script(script: str | None) -> str:
    if script is None:
        raise InvalidRequest("Send a `script`: the text the replica will speak.")
    text = script.strip()
    if not text:
        raise InvalidRequest("The script is empty: send the text the replica will speak.")
    if len(text) > MAX_SCRIPT:
        raise InvalidRequest(
            f"The script has {len(text)} characters; one video takes at most {MAX_SCRIPT}. "
            "Split it into several videos."
        )
    return text


def audio_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in AUDIO_SUFFIXES else ".audio"


def check_audio_duration(duration: float) -> float:
    """An audio input's duration (measured by the engine, `doppel.audio.media.audio_duration`),
    or `InvalidMedia` saying why it cannot be spoken.
    """
    if duration <= MIN_AUDIO_S:
        raise InvalidMedia(
            f"The audio lasts {duration:.2f} s; a video needs more than {MIN_AUDIO_S} s of it."
        )
    if duration > MAX_AUDIO_S:
        raise InvalidMedia(
            f"The audio lasts {duration:.0f} s; one video takes at most {MAX_AUDIO_S:.0f} s "
            "(10 minutes). Split it into several videos."
        )
    return duration


async def speaker(pool: asyncpg.Pool, tenant_id: uuid.UUID, replica_id: str) -> replicas.ReplicaRow:
    """The tenant's completed replica `replica_id` (`NotFound`, or `Conflict` while it is not
    completed): checked before anything is stored or fetched for a video.
    """
    rep = await replicas.get(pool, tenant_id, replica_id)
    if rep.status != "completed":
        state = "still training" if rep.status == "started" else "failed to train"
        raise Conflict(
            f"Replica {replica_id} is {state} (status {rep.status!r}); a video needs a "
            "completed replica."
        )
    return rep


async def create(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    tenant_id: uuid.UUID,
    replica_id: str,
    script: str | None,
    video_name: str | None = None,
    disclosure_mark: bool = True,
    callback_url: str | None = None,
    notify: Notify | None = None,
    *,
    audio: Path | None = None,
    storage: LocalStorage | None = None,
) -> VideoRow:
    """Check the request, record the video `queued` and enqueue its rendering.

    The video speaks `script`, or the recording at `audio` (a file on disk whose duration the
    caller has checked with `check_audio_duration`, copied into `storage` under the video's id;
    the caller keeps or removes the original): exactly one.
    """
    if audio is not None and script is not None:
        raise InvalidRequest(
            "Send a script or audio, not both: the replica speaks one or the other."
        )
    if audio is None:
        if script is None:
            raise InvalidRequest(
                "Send a script or audio: `script` (the text the replica will speak), or "
                "`audio_url` or a multipart `audio` file (a recording it will lip-sync)."
            )
        text: str | None = check_script(script)
    else:
        text = None
    name = (video_name or "").strip() or None
    if name is not None and len(name) > MAX_NAME:
        raise InvalidRequest(f"video_name is {len(name)} characters long; at most {MAX_NAME}.")
    await speaker(pool, tenant_id, replica_id)
    vid = new_id()
    stored: Path | None = None
    try:
        if audio is not None:
            if storage is None:
                raise TypeError("videos.create needs `storage` to keep an audio input")
            key = f"{vid}.input{audio_suffix(audio.name)}"
            stored = await asyncio.to_thread(storage.put_file, tenant_id, "videos", key, audio)
        row = await pool.fetchrow(
            """INSERT INTO videos (video_id, tenant_id, replica_id, video_name, script,
                                   disclosure_mark, callback_url, audio_path)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
            vid,
            tenant_id,
            replica_id,
            name,
            text,
            disclosure_mark,
            callback_url,
            None if stored is None else str(stored),
        )
    except BaseException:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise
    try:
        await queue.enqueue(redis, queue.RENDER_VIDEO, vid)
    except (OSError, ConnectionError, TimeoutError) as exc:
        await pool.execute("DELETE FROM videos WHERE video_id = $1", vid)
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise ServiceUnavailable("The job queue is unavailable; try again shortly.") from exc
    if notify is not None:  # webhook: queued
        await notify.changed(pool, "video", vid)
    return from_row(row)


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, video_id: str) -> VideoRow:
    row = await pool.fetchrow(
        """SELECT * FROM videos WHERE video_id = $1 AND tenant_id = $2
           AND status <> 'deleted'""",
        video_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No video {video_id} exists for this API key.")
    return from_row(row)


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int
) -> tuple[list[VideoRow], int]:
    """One page of the tenant's videos, newest first, and how many there are in all."""
    rows, total = await db.fetch_page(
        pool,
        "SELECT * FROM videos WHERE tenant_id = $1 AND status <> 'deleted'",
        "created_at DESC, video_id",
        [tenant_id],
        page,
        limit,
    )
    return [from_row(r) for r in rows], total


async def delete(pool: asyncpg.Pool, tenant_id: uuid.UUID, video_id: str) -> None:
    item = await get(pool, tenant_id, video_id)
    await pool.execute(
        """UPDATE videos SET status = 'deleted', video_path = NULL, thumbnail_path = NULL,
                  updated_at = now() WHERE video_id = $1""",
        video_id,
    )
    for path in (item.video_path, item.thumbnail_path, item.audio_path):
        if path is not None:
            path.unlink(missing_ok=True)


async def shared(pool: asyncpg.Pool, video_id: str, token: str) -> VideoRow:
    """The video `token` opens; `NotFound` for a wrong token, an unknown or a deleted video."""
    row = await pool.fetchrow(
        "SELECT * FROM videos WHERE video_id = $1 AND status <> 'deleted'", video_id
    )
    if row is None or not sharing.matches(row["share_token"], token):
        raise NotFound(f"No video {video_id} is shared with this link: ask for a new link.")
    return from_row(row)


# --- the render job's steps (orchestrator.jobs.video) -------------------------------------------


async def claim(pool: asyncpg.Pool, video_id: str) -> VideoRow | None:
    """Mark a queued video (or one a dead worker left `generating`) as generating; None when it
    is finished, failed or deleted.
    """
    row = await pool.fetchrow(
        """UPDATE videos SET status = 'generating', progress = 0, attempts = attempts + 1,
                  started_at = now(), updated_at = now()
           WHERE video_id = $1 AND status IN ('queued', 'generating')
           RETURNING *""",
        video_id,
    )
    return None if row is None else from_row(row)


async def set_progress(pool: asyncpg.Pool, video_id: str, percent: int) -> None:
    await pool.execute(
        """UPDATE videos SET progress = $2, updated_at = now()
           WHERE video_id = $1 AND status = 'generating'""",
        video_id,
        percent,
    )


async def requeue(pool: asyncpg.Pool, video_id: str, notify: Notify | None = None) -> None:
    """Back to `queued`: the model services are down and the job is retried."""
    await pool.execute(
        "UPDATE videos SET status = 'queued', updated_at = now() WHERE video_id = $1",
        video_id,
    )
    if notify is not None:  # webhook: queued again (the job is retried)
        await notify.changed(pool, "video", video_id)


async def finish(
    pool: asyncpg.Pool,
    video_id: str,
    mp4: Path,
    jpg: Path,
    duration_s: float,
    timings: dict[str, float],
    notify: Notify | None = None,
) -> None:
    """`ready`, with its files, duration and the render's stage times (`timings`)."""
    await pool.execute(
        """UPDATE videos SET status = 'ready', progress = 100, error_message = NULL,
                  video_path = $2, thumbnail_path = $3, duration_s = $4, timings = $5::jsonb,
                  finished_at = now(), updated_at = now()
           WHERE video_id = $1""",
        video_id,
        str(mp4),
        str(jpg),
        duration_s,
        json.dumps(timings),
    )
    if notify is not None:  # webhook: ready
        await notify.changed(pool, "video", video_id)


async def fail(
    pool: asyncpg.Pool, video_id: str, reason: str, notify: Notify | None = None
) -> None:
    await pool.execute(
        """UPDATE videos SET status = 'error', error_message = $2, updated_at = now()
           WHERE video_id = $1 AND status IN ('queued', 'generating')""",
        video_id,
        reason,
    )
    if notify is not None:  # webhook: error
        await notify.changed(pool, "video", video_id)
