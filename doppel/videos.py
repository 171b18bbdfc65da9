"""Videos: a completed replica speaking a script, made by the `render_video` job.

The row in `videos` is the job's state: `queued` -> `generating` (with `progress` 0-100) ->
`ready` or `error`. The job speaks the script in the replica's cloned voice through Triton's
`voice` model, renders the replica on that speech (doppel.render, Triton's models) and stores
`<data>/<tenant>/videos/<video_id>.mp4` and `<video_id>.jpg` (a middle frame). Outputs are
written under temporary names and renamed, so a re-run after a dead worker starts clean.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
import secrets
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from arq.connections import ArqRedis

from doppel import jobs, replicas
from doppel.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from doppel.progress import ProgressWriter
from doppel.storage import LocalStorage
from doppel.triton import TritonClient

if TYPE_CHECKING:
    from doppel.webhooks import Notifier

log = logging.getLogger(__name__)

#: Longest script, in characters (about 10 minutes of speech, render's limit).
MAX_SCRIPT = 10_000
MAX_NAME = 200
_FRAME = re.compile(r"frame (\d+)/(\d+)")


@dataclasses.dataclass(frozen=True)
class VideoRow:
    video_id: str
    tenant_id: uuid.UUID
    replica_id: str
    video_name: str | None
    script: str
    status: str
    progress: int
    error_message: str | None
    video_path: Path | None
    thumbnail_path: Path | None
    duration_s: float | None
    disclosure_mark: bool
    created_at: dt.datetime
    updated_at: dt.datetime


def _from_row(row: asyncpg.Record) -> VideoRow:
    return VideoRow(
        video_id=row["video_id"],
        tenant_id=row["tenant_id"],
        replica_id=row["replica_id"],
        video_name=row["video_name"],
        script=row["script"],
        status=row["status"],
        progress=row["progress"],
        error_message=row["error_message"],
        video_path=Path(row["video_path"]) if row["video_path"] else None,
        thumbnail_path=Path(row["thumbnail_path"]) if row["thumbnail_path"] else None,
        duration_s=row["duration_s"],
        disclosure_mark=row["disclosure_mark"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
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
) -> VideoRow:
    """Check the request, record the video `queued` and enqueue its rendering."""
    text = check_script(script)
    name = (video_name or "").strip() or None
    if name is not None and len(name) > MAX_NAME:
        raise InvalidRequest(f"video_name is {len(name)} characters long; at most {MAX_NAME}.")
    rep = await replicas.get(pool, tenant_id, replica_id)
    if rep.status != "completed":
        state = "still training" if rep.status == "started" else "failed to train"
        raise Conflict(
            f"Replica {replica_id} is {state} (status {rep.status!r}); a video needs a "
            "completed replica."
        )
    vid = new_id()
    row = await pool.fetchrow(
        """INSERT INTO videos (video_id, tenant_id, replica_id, video_name, script,
                               disclosure_mark, callback_url)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        vid,
        tenant_id,
        replica_id,
        name,
        text,
        disclosure_mark,
        callback_url,
    )
    try:
        await jobs.enqueue(redis, jobs.RENDER_VIDEO, vid)
    except (OSError, ConnectionError, TimeoutError) as exc:
        await pool.execute("DELETE FROM videos WHERE video_id = $1", vid)
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
    total = await pool.fetchval(
        "SELECT count(*) FROM videos WHERE tenant_id = $1 AND status <> 'deleted'", tenant_id
    )
    rows = await pool.fetch(
        """SELECT * FROM videos WHERE tenant_id = $1 AND status <> 'deleted'
           ORDER BY created_at DESC, video_id LIMIT $2 OFFSET $3""",
        tenant_id,
        limit,
        (page - 1) * limit,
    )
    return [_from_row(r) for r in rows], int(total)


async def delete(pool: asyncpg.Pool, tenant_id: uuid.UUID, video_id: str) -> None:
    item = await get(pool, tenant_id, video_id)
    await pool.execute(
        """UPDATE videos SET status = 'deleted', video_path = NULL, thumbnail_path = NULL,
                  updated_at = now() WHERE video_id = $1""",
        video_id,
    )
    for path in (item.video_path, item.thumbnail_path):
        if path is not None:
            path.unlink(missing_ok=True)


# --- the worker's half -------------------------------------------------------------------------


async def claim(pool: asyncpg.Pool, video_id: str) -> VideoRow | None:
    """Mark a queued video (or one a dead worker left `generating`) as generating; None when it
    is finished, failed or deleted.
    """
    row = await pool.fetchrow(
        """UPDATE videos SET status = 'generating', progress = 0, attempts = attempts + 1,
                  updated_at = now()
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
    from scipy.io import wavfile

    from doppel import render as engine
    from doppel.replica import Replica

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

    def on_progress(message: str) -> None:
        if m := _FRAME.search(message):
            progress.raise_to(5 + 90 * int(m[1]) // max(1, int(m[2])))

    mp4 = storage.path_for(item.tenant_id, "videos", f"{video_id}.mp4")
    jpg = mp4.with_suffix(".jpg")
    mp4.parent.mkdir(parents=True, exist_ok=True)
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
            if rep.voice_folder is None:
                raise InvalidRequest("This replica was trained without a voice: it cannot speak.")
            spoken, _timings = await triton.say(rep.voice_folder, item.script)
            progress.raise_to(5)
            with tempfile.TemporaryDirectory(prefix="doppel-video-") as tmp:
                wav = Path(tmp) / "speech.wav"
                await asyncio.to_thread(wavfile.write, wav, spoken.rate, spoken.samples)
                result = await engine.render(
                    rep,
                    wav,
                    part,
                    engine=triton,
                    watermark=item.disclosure_mark,
                    progress=on_progress,
                )
            await asyncio.to_thread(thumbnail, part, part_jpg, result.duration_s / 2)
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
                  video_path = $2, thumbnail_path = $3, duration_s = $4, updated_at = now()
           WHERE video_id = $1""",
        video_id,
        str(mp4),
        str(jpg),
        result.duration_s,
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
