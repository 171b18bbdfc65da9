"""Rendering a replica: decoded audio (or a script, spoken in the replica's cloned voice) in,
lip-synced talking-head MP4 out. Batch videos (the worker) and the CLI both come through here.

Two modes, one engine:
* replica mode: the base frames are the replica's own training video, its talking stretch
  played forward then backward (no jump at the turn), for as long as the audio lasts;
* dubbing mode (`base_video`): the base frames are an existing video of the person, re-mouthed
  for the new audio (Tavus's lip-sync product).

Per frame: audio features (`audio_encoder`) -> mouth shape (the replica's `mouth_motion`) ->
target landmarks on the base frame -> a reference crop of the person with the nearest shape,
warped to the target -> the replica's renderer (`talking_head`) -> composited into the frame,
marked AI-generated, and encoded to H.264 + AAC at 25 fps with the audio (`mp4.Mp4Sink`).

`engine` is anything with the three async methods of `TritonClient` used here
(`encode_audio`, `mouth_points`, `render_faces`; `say` too for a script).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from doppel.audio.media import Audio
from doppel.errors import InvalidMedia, InvalidRequest
from doppel.face import video
from doppel.platform.progress import Progress, Report, ignore
from doppel.render.frames import Engine, FrameSink, NeuralPainter, Painter, render_frames
from doppel.render.mp4 import Mp4Sink
from doppel.render.plan import Base, Planner, make_base, silent_frames
from doppel.replica.artefact import Bank, Replica

#: Longest audio one render takes (a demanding user's 10-minute video).
MAX_AUDIO_S = 600.0


class Speaker(Engine, Protocol):
    """An `Engine` that also speaks text in a cloned voice (Triton's `voice` model)."""

    async def say(self, voice: Path, text: str) -> tuple[Audio, dict[str, Any]]: ...


@dataclasses.dataclass
class RenderResult:
    path: Path
    frames: int
    duration_s: float
    seconds: float
    timings: dict[str, float]

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


async def render_script(
    replica: Replica,
    script: str,
    out: Path,
    *,
    engine: Speaker,
    base_video: Path | None = None,
    watermark: bool = True,
    progress: Report = ignore,
) -> RenderResult:
    """Render `replica` speaking `script` in its cloned voice into `out` (MP4); the speech's
    seconds are `timings["speech_s"]`.
    """
    if replica.voice_folder is None:
        raise InvalidRequest(
            "This replica was trained without a voice: it cannot speak a script (send audio "
            "instead)."
        )
    clock = time.perf_counter()
    spoken, _timings = await engine.say(replica.voice_folder, script)
    speech_s = round(time.perf_counter() - clock, 3)
    result = await render(
        replica,
        spoken,
        out,
        engine=engine,
        base_video=base_video,
        watermark=watermark,
        progress=progress,
    )
    result.timings = {"speech_s": speech_s, **result.timings}
    return result


async def render(
    replica: Replica,
    audio: Audio,
    out: Path,
    *,
    engine: Engine,
    soundtrack: Path | None = None,
    base_video: Path | None = None,
    watermark: bool = True,
    painter: Painter | None = None,
    progress: Report = ignore,
) -> RenderResult:
    """Render `replica` speaking `audio` into `out` (MP4). `soundtrack`: the file `audio` was
    decoded from, muxed as it is (an upload keeps its own rate and channels); None: `audio`.
    `painter`: what paints the mouth (the replica's renderer unless an evaluation baseline).
    `progress` gets `Progress("frames", done, total)`, 0 done first.
    """
    start = time.perf_counter()
    count, timings = await render_into(
        replica,
        audio,
        lambda base: Mp4Sink(out, base.width, base.height, soundtrack or audio),
        engine=engine,
        base_video=base_video,
        watermark=watermark,
        painter=painter,
        progress=progress,
    )
    return RenderResult(out, count, audio.duration_s, time.perf_counter() - start, timings)


async def render_into(
    replica: Replica,
    audio: Audio,
    sink: Callable[[Base], FrameSink],
    *,
    engine: Engine,
    base_video: Path | None = None,
    watermark: bool = True,
    painter: Painter | None = None,
    progress: Report = ignore,
) -> tuple[int, dict[str, float]]:
    """Render `replica` speaking `audio` into the `FrameSink` that `sink` makes for the base
    (an MP4 file, a live call's slots); returns the frame count and the stages' seconds.
    """
    paint = painter or NeuralPainter()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    if audio.duration_s < 0.2:
        raise InvalidMedia("The audio is shorter than 0.2 s: there is nothing to lip-sync.")
    if audio.duration_s > MAX_AUDIO_S:
        raise InvalidRequest(
            f"The audio lasts {audio.duration_s:.0f} s; one video takes at most "
            f"{MAX_AUDIO_S:.0f} s. Split the script into several videos."
        )
    count = math.ceil(audio.duration_s * video.ENGINE_FPS)
    progress(Progress("frames", 0, count))
    silent = silent_frames(audio.samples, audio.rate, count)

    async def speech() -> tuple[np.ndarray, np.ndarray | None]:
        # Triton's models, while this process tracks the dubbing video or loads the bank.
        features = _fit(await engine.encode_audio(audio.samples), count)
        aligned = await engine.mouth_points(replica.folder, features) if paint.shaped else None
        return features, aligned

    def frames_side() -> tuple[Base, Bank | None]:
        bank = replica.bank() if paint.banked else None
        return make_base(replica, base_video, count, silent), bank

    (features, aligned), (base, bank) = await asyncio.gather(
        speech(), asyncio.to_thread(frames_side)
    )
    lap("inputs_s")
    try:
        references = paint.references(aligned, bank, features)
        plans = Planner(base, aligned, references, anchored=base_video is not None)
        lap("plan_s")
        spent = await render_frames(
            replica.folder,
            base,
            plans,
            bank,
            sink(base),
            engine=engine,
            painter=paint,
            watermark=watermark,
            progress=progress,
        )
        timings.update(spent)
    finally:
        if base.live is not None:
            await asyncio.to_thread(base.live.close)
    lap("frames_s")
    return count, timings


def _fit(features: np.ndarray, count: int) -> np.ndarray:
    if len(features) >= count:
        return features[:count]
    return np.concatenate([features, np.repeat(features[-1:], count - len(features), 0)])
