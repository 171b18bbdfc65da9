"""Loudness normalisation to an EBU R128-style target: ITU-R BS.1770-4 integrated loudness.

Every clip Doppel speaks is brought to the same integrated loudness so that all videos sound
alike, whatever the voice. The measurement is BS.1770's: K-weighting (a high shelf for the head's
effect and a high-pass for the ear's), mean square over 400 ms blocks with 75 % overlap, an
absolute gate at -70 LUFS and a relative gate 10 LU below the ungated mean.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

#: EBU R128's programme target. Speech-only podcasts often use -16; -23 leaves headroom for
#: whatever the video is mixed with.
TARGET_LUFS = -23.0
#: True-peak ceiling (approximated by the sample peak): never clip after the gain.
PEAK_CEILING_DBFS = -1.0
_BLOCK_S, _OVERLAP = 0.4, 0.75
_ABSOLUTE_GATE, _RELATIVE_GATE = -70.0, -10.0


def _biquad(rate: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """BS.1770's two K-weighting stages, derived for any rate (the standard tabulates 48 kHz
    only) by the bilinear transform of the analogue prototypes, as libebur128 does.
    """
    if kind == "shelf":
        gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    else:
        gain_db, q, fc = 0.0, 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc / rate)
    if kind == "shelf":
        vh = 10 ** (gain_db / 20)
        vb = vh**0.4996667741545416
        a0 = 1 + k / q + k * k
        b = np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0
        a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    else:
        a0 = 1 + k / q + k * k
        b = np.array([1.0, -2.0, 1.0])
        a = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return b, a


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """Integrated loudness in LUFS of mono `samples`; -inf for silence or under one block."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    for kind in ("shelf", "highpass"):
        b, a = _biquad(rate, kind)
        x = lfilter(b, a, x)
    block = int(round(_BLOCK_S * rate))
    step = int(round(block * (1 - _OVERLAP)))
    if len(x) < block:
        return -math.inf
    squares = np.square(x)
    csum = np.concatenate([[0.0], np.cumsum(squares)])
    starts = np.arange(0, len(x) - block + 1, step)
    power = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(power)
    kept = power[loud > _ABSOLUTE_GATE]
    if len(kept) == 0:
        return -math.inf
    relative = -0.691 + 10 * math.log10(kept.mean()) + _RELATIVE_GATE
    with np.errstate(divide="ignore"):
        kept = kept[-0.691 + 10 * np.log10(kept) > relative]
    return -0.691 + 10 * math.log10(kept.mean()) if len(kept) else -math.inf


def normalize(samples: np.ndarray, rate: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """`samples` with the gain that brings them to `target_lufs`, limited so the peak stays
    under PEAK_CEILING_DBFS. Silence is returned as it is.
    """
    level = integrated_loudness(samples, rate)
    if not math.isfinite(level):
        return np.asarray(samples, dtype=np.float32)
    gain = 10 ** ((target_lufs - level) / 20)
    peak = float(np.max(np.abs(samples))) * gain
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    if peak > ceiling:
        gain *= ceiling / peak
    return (np.asarray(samples, dtype=np.float64) * gain).astype(np.float32)
