"""The `render_video` job: claim a queued video, speak its script in the replica's cloned voice
through Triton's `voice` model (an audio input is used as it is), render the replica on that
speech (doppel.render.video, Triton's models) and store the MP4 and a middle frame as JPEG.
Outputs are written under temporary names and renamed, so a re-run after a dead worker starts
clean.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg

from doppel.domain import replicas, videos
from doppel.domain.notify import Notify
from doppel.errors import ServiceUnavailable
from doppel.platform.progress import Progress, ProgressWriter
from doppel.platform.storage import LocalStorage
from doppel.triton import TritonClient

log = logging.getLogger(__name__)


def thumbnail(mp4: Path, jpg: Path, at_s: float) -> None:
    """The frame of `mp4` at `at_s` as the video's JPEG (ffmpeg; raises when it cannot)."""
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
    notify: Notify | None = None,
) -> str:
    """Render a claimed video; returns the final status or "skipped". `ServiceUnavailable`
    propagates (the row goes back to `queued`, the job is retried); any other failure ends the
    video in `error` with its reason.
    """
    from doppel.audio import media
    from doppel.render import video as engine
    from doppel.replica.artefact import Replica

    item = await videos.claim(pool, video_id)
    if item is None:
        return "skipped"
    if notify is not None:  # webhook: generating (once, even when re-claimed)
        await notify.changed(pool, "video", video_id)
    progress = ProgressWriter(lambda percent: videos.set_progress(pool, video_id, percent))

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
            rep = Replica.load(await replicas.model_folder_of(pool, item.replica_id))
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
            await videos.requeue(pool, video_id, notify)
            raise
        except Exception as exc:
            reason = getattr(exc, "message", None) or f"Rendering failed: {exc}"
            log.warning("video %s failed: %s", video_id, reason, exc_info=True)
            await videos.fail(pool, video_id, reason, notify)
            return "error"
        finally:
            part.unlink(missing_ok=True)
            part_jpg.unlink(missing_ok=True)
    await videos.finish(pool, video_id, mp4, jpg, result.duration_s, stages, notify)
    return "ready"
