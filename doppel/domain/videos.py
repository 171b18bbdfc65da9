"""Videos: a completed replica speaking a script or a recording, made by the `render_video` job.

The row in `videos` is the job's state: `queued` -> `generating` (with `progress` 0-100) ->
`ready` or `error`. A video has a script or an audio input, never both. The job speaks a script
in the replica's cloned voice through Triton's `voice` model (an audio input, stored at
`<data>/<tenant>/videos/<video_id>.input<suffix>` when the video is created, is used as it is),
renders the replica on that speech (doppel.render.video, Triton's models) and stores
`<data>/<tenant>/videos/<video_id>.mp4` and `<video_id>.jpg` (a middle frame). Outputs are
written under temporary names and renamed, so a re-run after a dead worker starts clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import secrets
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from arq.connections import ArqRedis

from doppel.domain import replicas
from doppel.errors import Conflict, InvalidMedia, InvalidRequest, NotFound, ServiceUnavailable
from doppel.platform import db, queue
from doppel.platform.progress import Progress, ProgressWriter
from doppel.platform.storage import LocalStorage
from doppel.triton import TritonClient

if TYPE_CHECKING:
    from doppel.domain.webhooks import Notifier

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


def _from_row(row: asyncpg.Record) -> VideoRow:
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


def check_audio(path: Path) -> float:
    """The duration of an audio input, or `InvalidMedia` saying why it cannot be spoken."""
    from doppel.audio import media

    duration = media.audio_duration(path)
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
    notify: Notifier | None = None,
    *,
    audio: Path | None = None,
    storage: LocalStorage | None = None,
) -> VideoRow:
    """Check the request, record the video `queued` and enqueue its rendering.

    The video speaks `script`, or the recording at `audio` (a file on disk, copied into
    `storage` under the video's id; the caller keeps or removes the original): exactly one.
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
        await asyncio.to_thread(check_audio, audio)
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
    return _from_row(row)


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, video_id: str) -> VideoRow:
    row = await pool.fetchrow(
        """SELECT * FROM videos WHERE video_id = $1 AND tenant_id = $2
           AND status <> 'deleted'""",
        video_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No video {video_id} exists for this API key.")
    return _from_row(row)


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
    return [_from_row(r) for r in rows], total


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


# --- the worker's half -------------------------------------------------------------------------


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
    return None if row is None else _from_row(row)


def thumbnail(mp4: Path, jpg: Path, at_s: float) -> None:
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{max(0.0, at_s):.3f}",
            "-i", str(mp4), "-frames:v", "1", "-q:v", "3", "-f", "image2", str(jpg),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


async def render(
    pool: asyncpg.Pool,
    triton: TritonClient,
    storage: LocalStorage,
    video_id: str,
    notify: Notifier | None = None,
) -> str:
    """Render a claimed video; returns the final status or "skipped". `ServiceUnavailable`
    propagates (the row goes back to `queued`, the job is retried); any other failure ends the
    video in `error` with its reason.
    """
    from doppel.audio import media
    from doppel.render import video as engine
    from doppel.replica.artefact import Replica

    item = await claim(pool, video_id)
    if item is None:
        return "skipped"
    if notify is not None:  # webhook: generating (once, even when re-claimed)
        await notify.changed(pool, "video", video_id)
    progress = ProgressWriter(
        lambda percent: pool.execute(
            """UPDATE videos SET progress = $2, updated_at = now()
               WHERE video_id = $1 AND status = 'generating'""",
            video_id,
            percent,
        )
    )

    def on_progress(done: Progress) -> None:
        if done.stage == "frames":
            progress.raise_to(5 + 90 * done.done // max(1, done.total))

    mp4 = storage.path_for(item.tenant_id, "videos", f"{video_id}.mp4")
    jpg = mp4.with_suffix(".jpg")
    mp4.parent.mkdir(parents=True, exist_ok=True)
    # Parts a killed worker left behind: the claim above makes this the video's only render.
    for stale in mp4.parent.glob(f".{video_id}.*.part.*"):
        stale.unlink(missing_ok=True)
    part = mp4.with_name(f".{video_id}.{uuid.uuid4().hex}.part.mp4")
    part_jpg = part.with_suffix(".jpg")
    async with progress:
        try:
            rep_row = await pool.fetchrow(
                "SELECT folder, status FROM replicas WHERE replica_id = $1", item.replica_id
            )
            if rep_row is None or rep_row["status"] != "completed":
                raise Conflict(f"Replica {item.replica_id} is not a completed replica any more.")
            rep = Replica.load(Path(rep_row["folder"]) / "model")
            if item.audio_path is None:  # a script: spoken in the replica's cloned voice
                result = await engine.render_script(
                    rep,
                    item.script or "",
                    part,
                    engine=triton,
                    watermark=item.disclosure_mark,
                    progress=on_progress,
                )
            else:
                result = await engine.render(
                    rep,
                    await media.decode_audio(item.audio_path),
                    part,
                    engine=triton,
                    soundtrack=item.audio_path,
                    watermark=item.disclosure_mark,
                    progress=on_progress,
                )
            stages = dict(result.timings)
            clock = time.perf_counter()
            await asyncio.to_thread(thumbnail, part, part_jpg, result.duration_s / 2)
            stages["thumbnail_s"] = round(time.perf_counter() - clock, 3)
            part.rename(mp4)
            part_jpg.rename(jpg)
        except ServiceUnavailable:
            await pool.execute(
                "UPDATE videos SET status = 'queued', updated_at = now() WHERE video_id = $1",
                video_id,
            )
            if notify is not None:  # webhook: queued again (the job is retried)
                await notify.changed(pool, "video", video_id)
            raise
        except Exception as exc:
            reason = getattr(exc, "message", None) or f"Rendering failed: {exc}"
            log.warning("video %s failed: %s", video_id, reason, exc_info=True)
            await fail(pool, video_id, reason, notify)
            return "error"
        finally:
            part.unlink(missing_ok=True)
            part_jpg.unlink(missing_ok=True)
    await pool.execute(
        """UPDATE videos SET status = 'ready', progress = 100, error_message = NULL,
                  video_path = $2, thumbnail_path = $3, duration_s = $4, timings = $5::jsonb,
                  finished_at = now(), updated_at = now()
           WHERE video_id = $1""",
        video_id,
        str(mp4),
        str(jpg),
        result.duration_s,
        json.dumps(stages),
    )
    if notify is not None:  # webhook: ready
        await notify.changed(pool, "video", video_id)
    return "ready"


async def fail(
    pool: asyncpg.Pool, video_id: str, reason: str, notify: Notifier | None = None
) -> None:
    await pool.execute(
        """UPDATE videos SET status = 'error', error_message = $2, updated_at = now()
           WHERE video_id = $1 AND status IN ('queued', 'generating')""",
        video_id,
        reason,
    )
    if notify is not None:  # webhook: error
        await notify.changed(pool, "video", video_id)
