"""Frame-by-frame voice conversion learned from parallel data (Toda et al. 2007 style).

Training: the target's own sentences are spoken again by the base voice; each pair is aligned
by dynamic time warping on the coded spectral envelopes; MLPs (an ensemble of three seeds, their
outputs averaged) learn base frame (with +-2 frames of context) -> the target's spectral shape
(and its level c0, an auxiliary output the run time does not use). Every real target frame is
kept in a kNN pool, labelled with the base voice's phone DTW aligned it to. From the same
aligned pairs, each of the base voice's phones gets the target's prosody on it: how much louder
(c0) and how much higher (log-F0) the target says it than the base voice.

At run time every base frame is mapped, then moved halfway to the mean of its k nearest real
target frames *of the same phone* (kNN-VC, Baas et al. 2023, constrained by the base voice's
phone timings): the mapping alone averages vowels together, which costs intelligibility; real
frames of the right phone restore it, where unconstrained neighbours from a minute of speech are
often another sound. The level contour is the base voice's in the target's range, each phone
offset by the target's level on it; pitch is mapped quantile to quantile onto the target's
distribution of log-F0, then each phone offset by the target's pitch on it (`phone_level`,
`phone_pitch`). Offsets per phone rather than frame-by-frame predictions: the MLP's own c0 at
half weight gained as much on its own but flattened the loudness contour the talking head's
mouth follows (a script video's env_corr 0.06-0.13 against 0.28), and a pitch MLP gained nothing.
`strength` (chosen at training by `validate.choose_strength`) then keeps part of the base
voice's own shape where a mapping learned from little speech would smear words.

Inference needs numpy only: the MLPs' weights are stored as arrays. The MLPs (with their input
normalisation and context window) are also exported as one ONNX graph
(`mapping.export_mapping`), which Triton's `voice` models run (`mapping.onnx_mapper`); the kNN
blend, F0 mapping and WORLD stay numpy. Learning a conversion is `learning.train`.

Held-out LJ Speech (benchmarks/quality/voice.py), each step added in turn: mean/variance mapping
with free kNN 0.772 similarity / 13.1 % WER; phone-constrained kNN 0.775 / 11.4 %; F0 quantile
mapping and an ensemble of three 0.786 / 6.9 % (Whisper's normaliser); the level in the
target's range with its per-phone offsets 0.799, and per-phone pitch 0.811 / 8.7 %. What was
left (WORLD resynthesis of the real clips scores 0.849): with the real sentence's own pitch and
level contours aligned onto the base voice's frames, 0.840; its own timing adds nothing (real
frames warped onto the base voice's timing still score 0.847).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from doppel.voice.tts import Timing
from doppel.voice.world import CODED_DIMS, FRAME_MS, Frames

#: Frames of context either side of the one being mapped.
CONTEXT = 2
#: Real target frames averaged per output frame: 1 copies (crackly), many smear.
KNN_K = 4
#: Cepstra (from c1) that DTW compares: the envelope's broad shape, which two speakers share.
ALIGN_DIMS = 25
#: Frames below this percentile of an utterance's level are pauses.
PAUSE_PERCENTILE = 25
#: Share of the kNN frames in the output (the rest is the MLP's own frame).
KNN_WEIGHT = 0.5
#: Seconds of sounding target speech in the pool at which kNN gets its full weight.
KNN_FULL_S = 0.0
#: Strength of the global-variance boost (0 none, 1 full): a mapping averages frames, which
#: flattens the spectra's variation over time and muffles the voice; restoring part of the
#: target's variance helps identity (findings-voice.md: +0.014 at half strength).
GV_STRENGTH = 0.5
#: Frames (5 ms) the per-phone level and pitch offsets are averaged over (45 ms), so a phone
#: boundary is a glide rather than a step.
PROSODY_SMOOTH = 9
#: Seconds of sounding target speech (the kNN pool) below which no per-phone prosody is learned:
#: from Obama's 18 s of speech (15 s of pool) the level offsets gained no similarity (0.665 ->
#: 0.661) and the prosody lowered how well a replica's mouth follows its cloned voice (the
#: end-to-end test's env_corr fell below 0.15 in 2 of 8 runs, against 1 of 6 without); LJ
#: Speech's 53 s (43 s of pool) gains 0.786 -> 0.812.
PROSODY_MIN_S = 25.0
#: Aligned frames of the global mean a phone's offset is pulled towards: a phone heard a few
#: times keeps mostly the global offset, one heard hundreds of times its own.
PROSODY_SHRINK = 20


@dataclasses.dataclass
class Conversion:
    """What a profile learns: feature statistics, the MLP, F0 statistics and the kNN pool."""

    src_mean: np.ndarray
    src_std: np.ndarray
    tgt_mean: np.ndarray
    tgt_std: np.ndarray
    weights: list[np.ndarray]  # W1, b1, W2, b2, W3, b3 of each member MLP in turn
    src_logf0: tuple[float, float]
    tgt_logf0: tuple[float, float]
    pool: np.ndarray  # [N, CODED_DIMS - 1] real target frames' shape (normalised), float32
    #: The base voice's phone names; `pool_labels` indexes them (-1: unknown). Empty for a
    #: profile learned without the base voice's phone timings.
    phones: list[str] = dataclasses.field(default_factory=list)
    #: [N] int16: the phone each pool frame was aligned to (DTW against the base voice).
    pool_labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    #: [2, F0_QUANTILES] quantiles of voiced log-F0, base voice then target (`convert` maps
    #: one distribution onto the other); empty for a profile learned without them.
    f0_quantiles: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((2, 0)))
    #: How far the spectral shape moves from the base voice's towards the mapping (0..1):
    #: chosen at training time as the strongest that keeps words clear (`profile.train`).
    strength: float = 1.0
    #: MLPs in `weights` whose outputs are averaged (each trained from another seed).
    members: int = 1
    #: [len(phones) + 1] how much louder than the base voice the target says each phone (the
    #: last: any frame of no known phone), in normalised c0 (the base's c0 in its own units,
    #: the output's in the target's, so the level's range becomes the target's too). Empty
    #: for a profile learned before it existed: the base voice's level as it is.
    phone_level: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    #: [len(phones) + 1] the target's log-F0 on each phone above the quantile-mapped base
    #: voice's (last: unknown phone). Empty: none.
    phone_pitch: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        np.savez_compressed(
            path,
            src_mean=self.src_mean,
            src_std=self.src_std,
            tgt_mean=self.tgt_mean,
            tgt_std=self.tgt_std,
            logf0=np.array([*self.src_logf0, *self.tgt_logf0]),
            pool=self.pool.astype(np.float16),
            phones=np.array(self.phones, dtype=np.str_),
            pool_labels=self.pool_labels.astype(np.int16),
            f0_quantiles=self.f0_quantiles,
            strength=np.array(self.strength),
            members=np.array(self.members),
            phone_level=self.phone_level,
            phone_pitch=self.phone_pitch,
            **arrays,
        )

    @classmethod
    def load(cls, path: Path) -> Conversion:
        with np.load(path) as z:
            n = sum(1 for k in z.files if k[0] == "w" and k[1:].isdigit())
            f0 = z["logf0"]
            return cls(
                z["src_mean"],
                z["src_std"],
                z["tgt_mean"],
                z["tgt_std"],
                [z[f"w{i}"] for i in range(n)],
                (float(f0[0]), float(f0[1])),
                (float(f0[2]), float(f0[3])),
                z["pool"].astype(np.float32),
                [str(p) for p in z["phones"]] if "phones" in z.files else [],
                z["pool_labels"] if "pool_labels" in z.files else np.zeros(0, np.int16),
                z["f0_quantiles"] if "f0_quantiles" in z.files else np.zeros((2, 0)),
                float(z["strength"]) if "strength" in z.files else 1.0,
                int(z["members"]) if "members" in z.files else 1,
                z["phone_level"] if "phone_level" in z.files else np.zeros(0),
                z["phone_pitch"] if "phone_pitch" in z.files else np.zeros(0),
            )

    def map_coded(self, coded: np.ndarray) -> np.ndarray:
        """The MLP's target-normalised shape (dims 1:) for base-voice coded envelopes [T, D]."""
        x = context_window((coded - self.src_mean) / self.src_std)
        outs = []
        for w in self.member_weights():
            h = x
            for i in range(0, len(w) - 2, 2):
                h = np.maximum(h @ w[i] + w[i + 1], 0.0)
            outs.append(h @ w[-2] + w[-1])
        return np.mean(outs, axis=0)

    def member_weights(self) -> list[list[np.ndarray]]:
        """`weights` cut into the arrays of each member MLP."""
        per = len(self.weights) // self.members
        return [self.weights[i * per : (i + 1) * per] for i in range(self.members)]

    def map_log_f0(self, lf: np.ndarray) -> np.ndarray:
        """Voiced log-F0 of the base voice -> the target's (quantile to quantile)."""
        (ms, ss), (mt, st) = self.src_logf0, self.tgt_logf0
        if not (self.f0_quantiles.shape[1] and F0_QUANTILE_MAP):
            return (lf - ms) / ss * st + mt
        # Quantile to quantile: the target's whole pitch distribution (its range and its
        # skew: excursions up are wider than down), beyond a mean and a variance.
        qs, qt = self.f0_quantiles
        mapped = np.interp(lf, qs, qt)
        # Beyond the outer quantiles, linear in the target's spread.
        low, high = lf < qs[0], lf > qs[-1]
        mapped[low] = qt[0] + (lf[low] - qs[0]) / ss * st
        mapped[high] = qt[-1] + (lf[high] - qs[-1]) / ss * st
        return mapped

    def convert(
        self,
        frames: Frames,
        map_coded: Callable[[np.ndarray], np.ndarray] | None = None,
        labels: np.ndarray | None = None,
    ) -> Frames:
        """The same frames (same count: same time axis) in the target's voice.

        `map_coded` runs the MLP instead of `self.map_coded` (the profile's exported ONNX graph,
        `mapping.onnx_mapper`); everything after it stays numpy. `labels` ([T], `frame_labels`)
        are the base voice's phone per frame: the real target frames then come from the same phone.
        """
        out = (map_coded or self.map_coded)(frames.coded)
        shape_dims = CODED_DIMS - 1
        mapped = out[:, :shape_dims]
        # kNN-VC needs minutes of target speech: with less, the nearest real frames are often
        # other phonemes, so their share shrinks with the pool (full at KNN_FULL_S of speech).
        pool_s = len(self.pool) * FRAME_MS / 1000
        weight = KNN_WEIGHT * (min(1.0, pool_s / KNN_FULL_S) if KNN_FULL_S > 0 else 1.0)
        if weight > 0 and len(self.pool) > KNN_K:
            if labels is not None and len(self.pool_labels) == len(self.pool):
                near = knn_mean_by_label(mapped, labels, self.pool, self.pool_labels, KNN_K)
            else:
                near = knn_mean(mapped, self.pool, KNN_K, self.pool)
            mapped = (1 - weight) * mapped + weight * near
        sounding = sounding_frames(frames.coded)
        if GV_STRENGTH > 0 and sounding.sum() > 10 and len(self.pool) > 1:
            centre = mapped[sounding].mean(0)
            ratio = self.pool.std(0) / (mapped[sounding].std(0) + 1e-6)
            mapped = centre + (mapped - centre) * ratio**GV_STRENGTH
        base_n = (frames.coded - self.src_mean) / self.src_std
        strength = self.strength
        if strength < 1.0:
            # A weaker conversion: part of the base voice's own shape (moved to the target's
            # mean and spread) stays, which keeps words clear where the mapping is unsure.
            mapped = strength * mapped + (1.0 - strength) * base_n[:, 1:]
        coded = frames.coded.copy()
        coded[:, 1:] = mapped * self.tgt_std[1:] + self.tgt_mean[1:]
        phone = _phone_index(labels, len(coded), len(self.phones))
        if len(self.phone_level):
            # The level contour: the base voice's, in the target's range, each phone raised or
            # lowered as the target says it (per-phone offsets, not a frame-by-frame
            # prediction: the contour keeps the base voice's syllable rhythm, which the
            # talking head's mouth follows).
            level = _smooth(self.phone_level[phone], PROSODY_SMOOTH)
            coded[:, 0] = (base_n[:, 0] + level) * self.tgt_std[0] + self.tgt_mean[0]
        f0 = frames.f0.copy()
        v = f0 > 0
        f0[v] = np.exp(self.map_log_f0(np.log(f0[v])))
        if len(self.phone_pitch):
            f0[v] *= np.exp(_smooth(self.phone_pitch[phone], PROSODY_SMOOTH)[v])
        return Frames(f0=f0, coded=coded, ap=frames.ap, n_samples=frames.n_samples)


def _phone_index(labels: np.ndarray | None, n_frames: int, unknown: int) -> np.ndarray:
    """Each frame's row in a per-phone table whose last row (`unknown`) is for no known phone."""
    if labels is None:
        return np.full(n_frames, unknown, dtype=np.int64)
    return np.where(labels >= 0, labels, unknown).astype(np.int64)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over `width` frames, edges repeated (same length)."""
    if width <= 1 or len(x) == 0:
        return x
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def phone_offsets(values: np.ndarray, labels: np.ndarray, n_phones: int) -> np.ndarray:
    """[n_phones + 1]: the mean of `values` per phone label, each pulled towards the mean of
    all by `PROSODY_SHRINK` frames' weight; the last entry is that overall mean (label -1).
    """
    overall = float(values.mean()) if len(values) else 0.0
    out = np.full(n_phones + 1, overall)
    for p in range(n_phones):
        mine = values[labels == p]
        out[p] = (mine.sum() + PROSODY_SHRINK * overall) / (len(mine) + PROSODY_SHRINK)
    return out


def context_window(x: np.ndarray, context: int = CONTEXT) -> np.ndarray:
    """[T, D] -> [T, (2*context+1)*D]: each frame with its neighbours (edges repeated)."""
    padded = np.pad(x, ((context, context), (0, 0)), mode="edge")
    t = len(x)
    return np.concatenate([padded[i : i + t] for i in range(2 * context + 1)], axis=1)


def knn_mean(
    query: np.ndarray, keys: np.ndarray, k: int, values: np.ndarray, chunk: int = 2048
) -> np.ndarray:
    """For each query row, the mean of `values` at its k nearest `keys` (Euclidean)."""
    out = np.empty((len(query), values.shape[1]), dtype=np.float64)
    key_sq = np.einsum("ij,ij->i", keys, keys)
    for s in range(0, len(query), chunk):
        q = query[s : s + chunk].astype(np.float32)
        d = key_sq[None, :] - 2.0 * (q @ keys.T)
        idx = np.argpartition(d, k, axis=1)[:, :k]
        out[s : s + chunk] = values[idx].mean(axis=1)
    return out


def knn_mean_by_label(
    query: np.ndarray,
    query_labels: np.ndarray,
    keys: np.ndarray,
    key_labels: np.ndarray,
    k: int,
) -> np.ndarray:
    """`knn_mean` with the neighbours of each query row taken among the keys of its own label
    (the same phone): a vowel is then rebuilt from real frames of that vowel, not from whatever
    other sound lies nearest. Rows whose label has `k` keys or fewer (or is -1) search all.
    """
    out = np.empty((len(query), keys.shape[1]), dtype=np.float64)
    unmatched = np.ones(len(query), dtype=bool)
    for label in np.unique(query_labels):
        own = key_labels == label
        if label < 0 or own.sum() <= k:
            continue
        rows = query_labels == label
        out[rows] = knn_mean(query[rows], keys[own], k, keys[own])
        unmatched &= ~rows
    if unmatched.any():
        out[unmatched] = knn_mean(query[unmatched], keys, k, keys)
    return out


def frame_labels(phonemes: Sequence[Timing], n_frames: int, phones: Sequence[str]) -> np.ndarray:
    """[n_frames] int16: the index in `phones` of the phone heard at each WORLD frame (-1 for
    pauses and phones not in `phones`).
    """
    index = {p: i for i, p in enumerate(phones)}
    out = np.full(n_frames, -1, dtype=np.int16)
    step = FRAME_MS / 1000
    for ph in phonemes:
        i = index.get(ph.text, -1)
        a, b = int(np.ceil(ph.start / step)), int(np.ceil(ph.end / step))
        out[max(0, a) : max(0, min(n_frames, b))] = i
    return out


#: Quantiles of voiced log-F0 a profile keeps (5 %..95 %).
F0_QUANTILES = 19
#: Map pitch quantile to quantile (else by the log-F0 mean and variance only).
F0_QUANTILE_MAP = True


def log_f0_quantiles(f0s: Sequence[np.ndarray]) -> np.ndarray:
    """[F0_QUANTILES] quantiles (5 %..95 %) of voiced log-F0."""
    voiced = np.concatenate([f[f > 0] for f in f0s])
    if len(voiced) < 10:
        raise ValueError("too few voiced frames to learn a pitch")
    return np.quantile(np.log(voiced), np.linspace(0.05, 0.95, F0_QUANTILES))


def log_f0_stats(f0s: Sequence[np.ndarray]) -> tuple[float, float]:
    voiced = np.concatenate([f[f > 0] for f in f0s])
    if len(voiced) < 10:
        raise ValueError("too few voiced frames to learn a pitch")
    lf = np.log(voiced)
    return float(lf.mean()), float(lf.std() + 1e-6)


def sounding_frames(coded: np.ndarray) -> np.ndarray:
    return coded[:, 0] > np.percentile(coded[:, 0], PAUSE_PERCENTILE)


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame pairs (ia, ib) of the cheapest monotonic alignment of a [Ta, D] and b [Tb, D]."""
    import librosa

    _, wp = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean", backtrack=True)
    wp = wp[::-1]
    return wp[:, 0], wp[:, 1]
