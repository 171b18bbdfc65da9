"""Turn-taking for a live call, from the VAD as the audio arrives.

Two moments matter in a conversation: when the person starts speaking (a replica that is
talking stops: barge-in) and when they have finished (the replica answers). `TurnDetector`
takes the audio chunk by chunk with the VAD's speech probability for each 32 ms chunk (Triton's
`vad` model, or `doppel.audio.vad.SileroVad` in process) and says both, with the turn's audio:
- a start needs `start_s` of speech in a row, so a cough or a click interrupts nobody;
- an end needs `end_silence_s` of silence, so a pause for breath mid-sentence does not cut in;
- probabilities between the two thresholds (hysteresis, as `doppel.audio.vad.segments`) keep the
  current state, so a soft syllable neither starts nor ends anything;
- the turn's audio begins `pre_roll_s` before the start was heard: the first syllable is quieter
  than the VAD's threshold, and speech-to-text needs it.

How the audio is cut into pieces does not change the result: the detector works chunk by chunk
and keeps what is left over.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Literal

import numpy as np

from doppel.audio.vad import CHUNK, RATE

STEP_S = CHUNK / RATE


@dataclasses.dataclass(frozen=True)
class TurnOptions:
    #: Speech probability at which a chunk is speech; it stays speech down to threshold - 0.15.
    threshold: float = 0.5
    #: Speech this long in a row starts a turn.
    start_s: float = 0.2
    #: Silence this long ends it.
    end_silence_s: float = 0.7
    #: A turn with less speech than this (start to last speech) is dropped as noise.
    min_turn_s: float = 0.3
    #: Audio kept from before the start.
    pre_roll_s: float = 0.3


@dataclasses.dataclass(frozen=True)
class TurnEvent:
    kind: Literal["speech_started", "turn_ended"]
    #: Seconds from the start of the stream: where the speech began, or where it ended.
    at_s: float
    #: `turn_ended` only: the turn's samples, from `pre_roll_s` before it began to its last
    #: speech chunk.
    audio: np.ndarray | None = None


class TurnDetector:
    def __init__(self, options: TurnOptions = TurnOptions()) -> None:
        self.options = options
        self._start_chunks = max(1, round(options.start_s / STEP_S))
        self._end_chunks = max(1, round(options.end_silence_s / STEP_S))
        self._pre_roll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(0, round(options.pre_roll_s / STEP_S))
        )
        self._pending: list[np.ndarray] = []  # speech not yet long enough to start a turn
        self._turn: list[np.ndarray] | None = None  # the turn's chunks so far (None: no turn)
        self._turn_start = 0  # chunk index where the turn's speech began
        self._silence = 0  # chunks of silence since the turn's last speech
        self._chunks = 0  # chunks seen
        self._leftover = np.zeros(0, np.float32)  # samples short of a whole chunk
        self._probs: collections.deque[float] = collections.deque()

    @property
    def in_turn(self) -> bool:
        """A turn has started and not ended (nor been dropped as noise)."""
        return self._turn is not None

    @property
    def heard_s(self) -> float:
        """Seconds of audio judged so far (the stream time of the next chunk)."""
        return self._chunks * STEP_S

    @property
    def silence_s(self) -> float:
        """Seconds of silence since the open turn's last speech (0 outside a turn)."""
        return self._silence * STEP_S if self._turn is not None else 0.0

    def speech_so_far(self) -> np.ndarray | None:
        """The open turn's audio up to its last speech: what `turn_ended` will hold if the
        turn ends with no more speech (None outside a turn).
        """
        if self._turn is None:
            return None
        cut = len(self._turn) - self._silence
        return np.concatenate(self._turn[:cut]) if cut > 0 else None

    def set_end_silence(self, seconds: float) -> None:
        """From now on, this much silence ends a turn (`conversation.sensitivity`)."""
        self._end_chunks = max(1, round(seconds / STEP_S))

    def push(self, samples: np.ndarray, probs: np.ndarray) -> list[TurnEvent]:
        """The new audio (16 kHz) and one speech probability per whole 512-sample chunk of
        the audio so far (probabilities may arrive ahead of or behind the samples; each is
        used once its chunk is complete). Returns what happened, in order.
        """
        self._leftover = np.concatenate([self._leftover, samples.astype(np.float32)])
        self._probs.extend(float(p) for p in probs)
        events: list[TurnEvent] = []
        while len(self._leftover) >= CHUNK and self._probs:
            chunk, self._leftover = self._leftover[:CHUNK], self._leftover[CHUNK:]
            events += self._step(chunk, self._probs.popleft())
        return events

    def _step(self, chunk: np.ndarray, p: float) -> list[TurnEvent]:
        o = self.options
        i, self._chunks = self._chunks, self._chunks + 1
        if self._turn is None:
            if p >= o.threshold:
                self._pending.append(chunk)
                if len(self._pending) < self._start_chunks:
                    return []
                self._turn_start = i + 1 - len(self._pending)
                self._turn = [*self._pre_roll, *self._pending]
                self._pending, self._silence = [], 0
                self._pre_roll.clear()
                return [TurnEvent("speech_started", self._turn_start * STEP_S)]
            # Too short to be a start: the chunks become pre-roll for a later one.
            self._pre_roll.extend([*self._pending, chunk])
            self._pending = []
            return []
        self._turn.append(chunk)
        if p >= o.threshold:
            self._silence = 0
        elif p < o.threshold - 0.15:
            self._silence += 1
        if self._silence < self._end_chunks:
            return []
        return self._end()

    def flush(self) -> list[TurnEvent]:
        """The stream ended: a turn still open ends at its last speech."""
        return [] if self._turn is None else self._end()

    def _end(self) -> list[TurnEvent]:
        """Close the open turn at its last speech chunk; its trailing silence becomes pre-roll
        for the next one. Nothing is said of a turn shorter than `min_turn_s`.
        """
        assert self._turn is not None
        cut = len(self._turn) - self._silence
        speech, silence = self._turn[:cut], self._turn[cut:]
        last = self._chunks - self._silence
        self._turn, self._silence = None, 0
        self._pre_roll.extend(silence)
        if not speech or (last - self._turn_start) * STEP_S < self.options.min_turn_s:
            return []
        return [TurnEvent("turn_ended", last * STEP_S, np.concatenate(speech))]
