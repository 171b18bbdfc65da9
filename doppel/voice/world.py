"""WORLD vocoder analysis and synthesis (`pyworld`): speech as F0, spectral envelope and
aperiodicity on a fixed frame grid.

Conversion changes only the values of each frame, never the number of frames, so the converted
audio has the same time axis as the base voice's: every word and phoneme timing the base TTS
reports holds for the converted audio as it is (frame k covers k * FRAME_MS ms either way).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

#: Conversion runs at the rate of every speech model in Doppel: it halves the FFT work of the
#: base voices' 22-32 kHz, and the judges (Whisper, speaker encoders) hear 16 kHz anyway.
RATE = 16_000
#: 5 ms frames: WORLD's default; coarser frames smear plosives.
FRAME_MS = 5.0
#: Dimensions of the coded (mel-cepstral) spectral envelope the mapping works on.
CODED_DIMS = 40
#: F0 search range covering low male to high female voices.
F0_FLOOR, F0_CEIL = 60.0, 500.0


def _pyworld():  # type: ignore[no-untyped-def]
    # pyworld 0.3.5 imports pkg_resources at import time, which warns on setuptools >= 67.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyworld

    return pyworld


@dataclasses.dataclass
class Frames:
    """One utterance in WORLD's terms; all arrays have one row per frame."""

    f0: np.ndarray  # [T] Hz, 0 where unvoiced
    coded: np.ndarray  # [T, CODED_DIMS] coded spectral envelope
    ap: np.ndarray  # [T, fft/2+1] aperiodicity
    n_samples: int

    @property
    def voiced(self) -> np.ndarray:
        return self.f0 > 0


def fft_size() -> int:
    return int(_pyworld().get_cheaptrick_fft_size(RATE, F0_FLOOR))


def analyse(samples: np.ndarray) -> Frames:
    """F0 (DIO refined by StoneMask), CheapTrick envelope (coded) and D4C aperiodicity of 16 kHz
    mono samples.
    """
    pw = _pyworld()
    x = np.ascontiguousarray(samples, dtype=np.float64).reshape(-1)
    f0, t = pw.dio(x, RATE, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    f0 = pw.stonemask(x, f0, t, RATE)
    sp = pw.cheaptrick(x, f0, t, RATE, f0_floor=F0_FLOOR)
    ap = pw.d4c(x, f0, t, RATE)
    coded = pw.code_spectral_envelope(sp, RATE, CODED_DIMS)
    return Frames(f0=f0, coded=coded, ap=ap, n_samples=len(x))


def synthesise(frames: Frames) -> np.ndarray:
    """Audio of exactly `frames.n_samples` samples (same time axis as the analysed input)."""
    pw = _pyworld()
    sp = pw.decode_spectral_envelope(
        np.ascontiguousarray(frames.coded, dtype=np.float64), RATE, fft_size()
    )
    y = pw.synthesize(
        np.ascontiguousarray(frames.f0, dtype=np.float64),
        sp,
        np.ascontiguousarray(frames.ap, dtype=np.float64),
        RATE,
        FRAME_MS,
    )
    if len(y) < frames.n_samples:
        y = np.pad(y, (0, frames.n_samples - len(y)))
    return y[: frames.n_samples].astype(np.float32)
