"""The replica in a live call: its listening frames while nobody speaks, and its speech rendered
through the same frame path as batch videos (`doppel.render`) into the call's `MediaClock`.

Listening: the replica's listening stretch (its talking stretch when it has none) played forward
and backward (`plan.pingpong`), marked AI-generated as batch videos are, decoded once and kept.
Speaking: `render_into` writes the frames into a `SlotSink`, which pairs each with its 40 ms of
audio and queues them on the clock; `interrupt` drops what is queued and cancels the render.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable

import numpy as np

from doppel.audio.media import Audio
from doppel.face import composite, video
from doppel.live.clock import SLOT_RATE, Cue, MediaClock, audio_slots
from doppel.render.frames import CHUNK, Engine
from doppel.render.plan import Base, pingpong
from doppel.render.video import render_into
from doppel.replica.artefact import Replica

#: Longest listening loop kept decoded (frames): 4 s forward, then back (~280 MB at 720p).
MAX_LISTENING = 100


def stream_size(width: int, height: int, stream_height: int | None) -> tuple[int, int]:
    """(width, height) of the streamed frames: the replica's own, or scaled down to
    `stream_height` keeping the aspect (even sizes, as VP8/H.264 want). Never scaled up.
    """
    if stream_height is None or stream_height >= height:
        return width, height
    scale = stream_height / height
    return max(2, round(width * scale / 2) * 2), max(2, round(stream_height / 2) * 2)


def fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`frame` at `size` (width, height)."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    import cv2

    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class SlotSink:
    """A `FrameSink` into a `MediaClock`: frame i goes with `audio[i]`. Slots are held until
    `lead` frames are rendered (or the render closes), then queued as they come, so playback
    does not overtake a render slower than real time within the first `lead` frames.

    `on_start` is called when the first slot plays, `on_end` when the last one has (with the
    clock's speaking position): the moments the person sees and hears, not the render's;
    `on_ready` when the first slots are queued (the lead is rendered).
    `write` and `close` run in the render's threads: slots reach the clock on its event loop.
    """

    def __init__(
        self,
        clock: MediaClock,
        audio: list[np.ndarray],
        size: tuple[int, int],
        *,
        lead: int | None = None,
        on_start: Cue | None = None,
        on_end: Cue | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.clock, self.audio, self.size = clock, audio, size
        self.on_ready = on_ready
        self.lead = len(audio) if lead is None else max(1, min(lead, len(audio)))
        self.written = 0
        self.on_start, self.on_end = on_start, on_end
        self._held: list[tuple[np.ndarray, np.ndarray]] = []
        self._released = False
        self._aborted = False
        self._loop = asyncio.get_running_loop()

    def write(self, frame: np.ndarray) -> None:
        if self._aborted or self.written >= len(self.audio):
            return
        self._held.append((fit(frame, self.size), self.audio[self.written]))
        self.written += 1
        if self._released or self.written >= self.lead:
            self._release(final=False)

    def close(self) -> None:
        self._release(final=True)

    def abort(self) -> None:
        self._aborted = True
        self._held = []
        self.clock.clear()

    def _release(self, *, final: bool) -> None:
        slots, self._held = self._held, []
        first = not self._released
        self._released = True
        if slots or final:
            self._loop.call_soon_threadsafe(self._queue, slots, first, final)

    def _queue(self, slots: list[tuple[np.ndarray, np.ndarray]], first: bool, final: bool) -> None:
        if self._aborted:
            return
        cues: list[tuple[int, Cue]] = []
        if first and slots and self.on_start is not None:
            cues.append((0, self.on_start))
        if first and slots and self.on_ready is not None:
            self.on_ready()
        if final and self.on_end is not None:
            if slots:
                cues.append((len(slots) - 1, self.on_end))
            else:
                self.clock.after(self.on_end)
        self.clock.extend(slots, cues)


@dataclasses.dataclass
class Utterance:
    """One `speak`: the frames rendered, the audio's seconds, the stages' seconds, and whether
    an `interrupt` cut it.
    """

    frames: int
    duration_s: float
    timings: dict[str, float]
    interrupted: bool = False


class Avatar:
    """A replica's face and voice on one call's clock. Make it with `load` (decodes the
    listening frames in a thread).
    """

    def __init__(
        self,
        replica: Replica,
        engine: Engine,
        listening: list[np.ndarray],
        size: tuple[int, int],
        *,
        watermark: bool = True,
    ) -> None:
        self.replica, self.engine = replica, engine
        self.size = size
        self.watermark = watermark
        self._listening = listening
        self._order = pingpong(0, len(listening), max(1, 2 * (len(listening) - 1)))
        self.clock = MediaClock(self.listening)
        self._lock = asyncio.Lock()
        self._generation = 0
        self._render: asyncio.Task[tuple[int, dict[str, float]]] | None = None
        #: Frames a second the last whole utterance rendered at (None: none rendered yet).
        self.render_fps: float | None = None

    @classmethod
    async def load(
        cls,
        replica: Replica,
        engine: Engine,
        *,
        stream_height: int | None = None,
        watermark: bool = True,
    ) -> Avatar:
        """The replica's avatar, streamed at `stream_height` (None: the replica's size)."""
        frames, size = await asyncio.to_thread(listening_frames, replica, stream_height, watermark)
        return cls(replica, engine, frames, size, watermark=watermark)

    @property
    def loop(self) -> list[np.ndarray]:
        """The listening frames, decoded and marked, at the stream size (played ping-pong)."""
        return self._listening

    def listening(self, index: int) -> np.ndarray:
        """The listening frame of slot `index`."""
        return self._listening[int(self._order[index % len(self._order)])]

    async def speak(
        self,
        audio: Audio,
        *,
        lead: int | None = None,
        on_start: Cue | None = None,
        on_end: Cue | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> Utterance:
        """Render `audio` spoken by the replica and queue it on the clock, after what is queued.
        Returns once every frame is queued (playback goes on), or when `interrupt` cut it.
        `lead`: frames rendered before playback starts; None: enough that playback cannot
        catch up with the render (`lead_for`). `on_start` / `on_end`: called (with the clock's
        speaking position) when its first / last slot plays; `on_ready` when its first slots
        are queued.
        """
        generation = self._generation
        async with self._lock:
            if generation != self._generation:
                return Utterance(0, audio.duration_s, {}, interrupted=True)

            def sink(base: Base) -> SlotSink:
                slots = audio_slots(audio.samples, audio.rate, len(base.schedule))
                ahead = self.lead_for(len(slots)) if lead is None else lead
                return SlotSink(
                    self.clock,
                    slots,
                    self.size,
                    lead=ahead,
                    on_start=on_start,
                    on_end=on_end,
                    on_ready=on_ready,
                )

            self._render = asyncio.create_task(
                render_into(self.replica, audio, sink, engine=self.engine, watermark=self.watermark)
            )
            try:
                frames, timings = await self._render
            except asyncio.CancelledError:
                if generation == self._generation:
                    raise  # the caller was cancelled, not interrupted
                return Utterance(0, audio.duration_s, {}, interrupted=True)
            finally:
                self._render = None
        self.render_fps = frames / max(timings.get("frames_s", 0.0), 1e-3)
        return Utterance(frames, audio.duration_s, timings)

    async def warm_up(self, audio: Audio) -> None:
        """Render `audio` where nobody sees it: the replica's models load in Triton and the
        render rate is measured, so the first reply plays after a short lead instead of after
        its whole render.
        """
        async with self._lock:
            frames, timings = await render_into(
                self.replica, audio, lambda base: _Discard(), engine=self.engine
            )
        if self.render_fps is None:
            self.render_fps = frames / max(timings.get("frames_s", 0.0), 1e-3)

    def lead_for(self, count: int) -> int:
        """Frames of a `count`-frame utterance to render before it plays: frame k is ready
        (k - lead) / r s after playback starts at render rate r, and due k / 25 s after, so
        lead >= count * (1 - r / 25), plus a chunk (frames arrive CHUNK at a time). All of
        them until a render rate is known.
        """
        if self.render_fps is None:
            return count
        ahead = count * max(0.0, 1.0 - self.render_fps / SLOT_RATE)
        return min(count, math.ceil(ahead) + CHUNK)

    def interrupt(self) -> int:
        """Barge-in: drop the queued speech (the next slot is a listening one) and cancel the
        render in flight and the `speak`s waiting. Returns the slots dropped.
        """
        self._generation += 1
        if self._render is not None:
            self._render.cancel()  # the render aborts its sink
        return self.clock.clear()


class _Discard:
    """A `FrameSink` that keeps nothing (a warm-up render)."""

    def write(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def listening_frames(
    replica: Replica, stream_height: int | None, watermark: bool
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The replica's listening stretch (at most MAX_LISTENING frames), marked as batch videos
    are and scaled to the stream size, and that size.
    """
    prepared = replica.prepared
    a, b = replica.idle_range or replica.base_range
    b = min(b, a + MAX_LISTENING)
    size = stream_size(prepared.width, prepared.height, stream_height)
    mark: Callable[[np.ndarray], np.ndarray] = (
        composite.Mark(prepared.width, prepared.height).apply if watermark else (lambda f: f)
    )
    frames: list[np.ndarray] = []
    source = video.read_frames(prepared.video_path, start=a)
    try:
        for frame in source:
            if len(frames) >= b - a:
                break
            frames.append(fit(mark(frame.copy()), size))
    finally:
        source.close()
    if not frames:
        raise ValueError(f"{replica.folder}: its prepared video has no frame {a}")
    return frames, size
