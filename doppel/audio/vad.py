"""Voice activity detection with Silero VAD (ONNX): streaming state in and out, and segments.

The logic behind Triton's `vad` model; never imports Triton. The network takes 512 new samples
(32 ms at 16 kHz) plus the previous 64 as context, and carries an LSTM state of 2x128 between
calls, so a live call can send audio as it arrives and keep the returned state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from doppel.platform.sessions import open_session
from doppel.settings import CPU_PROVIDERS

RATE = 16_000
CHUNK = 512
CONTEXT = 64
STATE_SHAPE = (2, 128)


@dataclasses.dataclass
class StreamState:
    """What a caller keeps between calls for one audio stream."""

    state: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    context: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


@dataclasses.dataclass(frozen=True)
class Segment:
    start: float
    end: float


class SileroVad:
    def __init__(
        self, onnx_path: Path, threads: int = 1, providers: Sequence[str] = CPU_PROVIDERS
    ) -> None:
        self._session = open_session(onnx_path, threads=threads, providers=providers)

    def run_batch(
        self, audio: np.ndarray, state: np.ndarray, context: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Speech probability per 512-sample chunk for B streams at once.

        audio [B, n*512], state [B, 2, 128], context [B, 64] -> probs [B, n], state, context.
        """
        batch, total = audio.shape
        if total % CHUNK:
            raise ValueError(f"audio length {total} is not a multiple of {CHUNK} samples")
        probs = np.zeros((batch, total // CHUNK), np.float32)
        lstm = np.ascontiguousarray(state.transpose(1, 0, 2), dtype=np.float32)  # [2, B, 128]
        ctx = context.astype(np.float32)
        sr = np.array(RATE, dtype=np.int64)
        for i in range(total // CHUNK):
            x = np.concatenate([ctx, audio[:, i * CHUNK : (i + 1) * CHUNK]], axis=1)
            out, lstm = self._session.run(None, {"input": x, "state": lstm, "sr": sr})
            probs[:, i] = out[:, 0]
            ctx = x[:, -CONTEXT:]
        return probs, np.ascontiguousarray(lstm.transpose(1, 0, 2)), ctx

    def probabilities(self, samples: np.ndarray, stream: StreamState | None = None) -> np.ndarray:
        """Probabilities for one stream; pads the tail to whole chunks; updates `stream`."""
        stream = stream or StreamState()
        pad = (-len(samples)) % CHUNK
        audio = np.pad(samples.astype(np.float32), (0, pad))[None, :]
        probs, state, ctx = self.run_batch(audio, stream.state[None], stream.context[None])
        stream.state, stream.context = state[0], ctx[0]
        return probs[0]


def segments(
    probs: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.03,
) -> list[Segment]:
    """Speech segments from chunk probabilities, with hysteresis (enter at `threshold`, leave
    below `threshold - 0.15`, as Silero's own get_speech_timestamps does).
    """
    step = CHUNK / RATE
    low = threshold - 0.15
    found: list[Segment] = []
    start: float | None = None
    silence_since: float | None = None
    for i, p in enumerate(probs):
        t = i * step
        if p >= threshold:
            silence_since = None
            if start is None:
                start = t
        elif start is not None and p < low:
            silence_since = t if silence_since is None else silence_since
            if t + step - silence_since >= min_silence_s:
                if silence_since - start >= min_speech_s:
                    found.append(Segment(max(0.0, start - pad_s), silence_since + pad_s))
                start, silence_since = None, None
    end = len(probs) * step
    if start is not None and end - start >= min_speech_s:
        found.append(Segment(max(0.0, start - pad_s), end))
    return found
