"""The live call's media clock (doppel.live.clock) on its own: speaking slots are played in order
after what is queued, their cues fire when they play (not when queued), a pause holds the
speech while listening slots play, and a barge-in drops the queue and its cues. No network, no
models: each slot is read when due (40 ms apart), as a track reads it."""

from __future__ import annotations

import numpy as np

from doppel.live.clock import SLOT_SAMPLES, MediaClock


def idle(index: int) -> np.ndarray:
    return np.zeros((2, 2, 3), np.uint8)


def speech(*marks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaking slots whose audio is filled with `mark` (to tell them apart when played)."""
    return [(np.full((2, 2, 3), m, np.uint8), np.full(SLOT_SAMPLES, m, np.int16)) for m in marks]


async def play(clock: MediaClock, count: int) -> list[int]:
    """The next `count` slots as played: their mark, 0 for a listening slot."""
    out = []
    for _ in range(count):
        slot = await clock.slot(clock.made)
        out.append(int(slot.audio[0]) if slot.speaking else 0)
    return out


async def test_cues_fire_when_their_slot_plays_and_a_pause_holds_the_speech() -> None:
    clock = MediaClock(idle)
    heard: list[tuple[str, int]] = []
    clock.extend(speech(1, 2, 3), [(0, lambda p: heard.append(("start", p)))])
    clock.after(lambda p: heard.append(("end", p)))
    assert heard == [] and clock.queued == 3  # queued, not yet played
    assert await play(clock, 1) == [1]
    assert heard == [("start", 0)]
    clock.pause()
    assert await play(clock, 3) == [0, 0, 0] and clock.queued == 2  # held while paused
    clock.resume()
    assert await play(clock, 3) == [2, 3, 0]
    assert heard == [("start", 0), ("end", 2)] and clock.spoken == 3
    # A second utterance queues after the first; its cue counts in speaking positions.
    clock.extend(speech(4, 5), [(1, lambda p: heard.append(("second", p)))])
    assert await play(clock, 2) == [4, 5] and heard[-1] == ("second", 4)


async def test_a_barge_in_drops_the_queue_its_cues_and_a_pause() -> None:
    clock = MediaClock(idle)
    fired: list[int] = []
    clock.extend(speech(1, 2, 3, 4), [(3, fired.append)])
    assert await play(clock, 1) == [1]
    clock.pause()
    assert clock.clear() == 3 and not clock.paused
    assert await play(clock, 3) == [0, 0, 0] and fired == []
    # Nothing queued: `after` fires at once, at the current speaking position.
    clock.after(fired.append)
    assert fired == [1]
    # A failing cue is logged, never stops the media.
    clock.extend(speech(7), [(0, lambda p: 1 / 0)])
    assert await play(clock, 2) == [7, 0]
