"""One media timeline for a live call: 40 ms slots, each one video frame and its 40 ms of audio.

Both WebRTC tracks ask the same `MediaClock` for slot `index` and stamp their frames from that
index (video at 90 kHz, audio at 48 kHz), so audio and video cannot drift apart: a slot is made
once, when the first track reaches it, and the other track reads the same one. A slot is the
next speaking slot queued (a rendered frame and its audio) or, when none is queued, an idle slot
(the replica's listening frame for that index, and silence).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from doppel.face import video

log = logging.getLogger(__name__)

#: Slots per second: the engine's frame rate (one frame per slot).
SLOT_RATE = video.ENGINE_FPS
SLOT_S = 1.0 / SLOT_RATE
#: WebRTC's audio rate (Opus works at 48 kHz; aiortc resamples anything else to it).
AUDIO_RATE = 48000
SLOT_SAMPLES = AUDIO_RATE // SLOT_RATE  # 1920
#: Slots kept after they are made, for a track that runs behind the other (10 s).
KEEP = 250


@dataclasses.dataclass(frozen=True)
class Slot:
    """40 ms of the call: `frame` uint8 [H, W, 3] RGB, `audio` int16 [SLOT_SAMPLES] mono."""

    index: int
    frame: np.ndarray
    audio: np.ndarray
    speaking: bool


def audio_slots(samples: np.ndarray, rate: int, count: int) -> list[np.ndarray]:
    """Float samples in [-1, 1] at `rate`, as `count` int16 slots at AUDIO_RATE (padded with
    silence, cut at `count`): the audio of `count` rendered frames.
    """
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(AUDIO_RATE, rate)
    wide = resample_poly(samples.astype(np.float32), AUDIO_RATE // g, rate // g)
    pcm = np.zeros(count * SLOT_SAMPLES, np.int16)
    n = min(len(pcm), len(wide))
    pcm[:n] = np.clip(np.round(wide[:n] * 32767.0), -32768, 32767).astype(np.int16)
    return list(pcm.reshape(count, SLOT_SAMPLES))


#: Called when a speaking slot is played (made): with the speaking position (`spoken`) at it.
Cue = Callable[[int], None]


class MediaClock:
    """The call's timeline. `idle(index)` gives the listening frame of slot `index`; speaking
    slots (`queue`) take precedence in order. Slot `index` is due at `start + index * SLOT_S`,
    `start` being when a track first asks (`now`).

    Speaking slots may carry a cue, called when the slot is played: events such as "the replica
    started speaking" are sent at playout, not when the speech was rendered. `pause` holds the
    queued speech (idle slots are played meanwhile) until `resume` or `clear`.
    """

    def __init__(self, idle: Callable[[int], np.ndarray]) -> None:
        self._idle = idle
        self._queue: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._cues: dict[int, list[Cue]] = {}  # by speaking position
        self._made: dict[int, Slot] = {}
        self._next = 0  # the first slot not yet made
        self._spoken = 0  # speaking slots played so far
        self._paused = False
        self._start: float | None = None
        self._silence = np.zeros(SLOT_SAMPLES, np.int16)
        #: Called with each slot as it is made, in order (a call's recording).
        self.observers: list[Callable[[Slot], None]] = []

    def now(self) -> int:
        """The slot due now; the first call starts the timeline at slot 0."""
        if self._start is None:
            self._start = time.monotonic()
        return int((time.monotonic() - self._start) / SLOT_S)

    async def slot(self, index: int) -> Slot:
        """Slot `index`, once it is due (at once for a track running behind)."""
        self.now()
        assert self._start is not None
        delay = self._start + index * SLOT_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while self._next <= index:
            self._make(self._next)
        made = self._made.get(index)
        if made is None:  # a track further behind than KEEP slots: the listening frame
            return Slot(index, self._idle(index), self._silence, False)
        return made

    def _make(self, index: int) -> None:
        if self._queue and not self._paused:
            frame, audio = self._queue.popleft()
            self._made[index] = Slot(index, frame, audio, True)
            position, self._spoken = self._spoken, self._spoken + 1
            for cue in self._cues.pop(position, ()):
                try:
                    cue(position)
                except Exception:  # a cue's failure must not stop the media
                    log.exception("a media clock cue failed")
        else:
            self._made[index] = Slot(index, self._idle(index), self._silence, False)
        self._made.pop(index - KEEP, None)
        self._next = index + 1
        for observe in self.observers:
            try:
                observe(self._made[index])
            except Exception:  # an observer's failure must not stop the media
                log.exception("a media clock observer failed")

    def extend(
        self, slots: Sequence[tuple[np.ndarray, np.ndarray]], cues: Iterable[tuple[int, Cue]] = ()
    ) -> None:
        """Queue speaking slots (frame, audio), played in order from the next slot made;
        `cues`: (i, cue) to call when `slots[i]` is played.
        """
        end = self._spoken + len(self._queue)
        for i, cue in cues:
            if 0 <= i < len(slots):
                self._cues.setdefault(end + i, []).append(cue)
        self._queue.extend(slots)

    def after(self, cue: Cue) -> None:
        """Call `cue` when what is queued now has played (at once when nothing is)."""
        if not self._queue:
            cue(self._spoken)
            return
        self._cues.setdefault(self._spoken + len(self._queue) - 1, []).append(cue)

    @property
    def made(self) -> int:
        """Slots made (played or being sent) so far: the index of the next one."""
        return self._next

    @property
    def spoken(self) -> int:
        """Speaking slots played so far (the speaking position)."""
        return self._spoken

    @property
    def queued(self) -> int:
        """Speaking slots not yet played."""
        return len(self._queue)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Hold the queued speech: idle slots play until `resume` (or `clear`)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def clear(self) -> int:
        """Drop every queued speaking slot (a barge-in) and their cues; the next slot made is
        idle, at most one slot from now, and a pause ends. Returns how many were dropped.
        """
        dropped = len(self._queue)
        self._queue.clear()
        self._cues.clear()
        self._paused = False
        return dropped
