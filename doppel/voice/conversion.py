"""Frame-by-frame voice conversion learned from parallel data (Toda et al. 2007 style).

Training: the target's own sentences are spoken again by the base voice; each pair is aligned
by dynamic time warping on the coded spectral envelopes; an MLP learns base frame (with +-2 frames
of context) -> target frame. At run time every base frame is mapped, then replaced by the mean of
its k nearest real target frames (kNN-VC, Baas et al. 2023): the mapping alone averages vowels
together, which costs intelligibility; real frames restore it (findings-voice.md: WER halved).
F0 is mapped by the log-F0 mean and variance of the two speakers.

Inference needs numpy only: the MLP's weights are stored as arrays. The MLP (with its input
normalisation and context window) is also exported as an ONNX graph (`export_mapping`), which
Triton's `voice` models run (`onnx_mapper`); the kNN blend, F0 mapping and WORLD stay numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    hidden: int = 256
    #: None: one epoch per FRAMES_PER_EPOCH aligned frame pairs, within 10..40. Small data
    #: overfits: on 18 s of Obama, 40 epochs gave 57 % WER, 15 epochs 38 %.
    epochs: int | None = None
    batch: int = 256
    lr: float = 2e-3
    #: DTW passes: the second aligns the *mapped* base frames, which match the target better.
    align_passes: int = 2
    seed: int = 0


@dataclasses.dataclass
class Conversion:
    """What a profile learns: feature statistics, the MLP, F0 statistics and the kNN pool."""

    src_mean: np.ndarray
    src_std: np.ndarray
    tgt_mean: np.ndarray
    tgt_std: np.ndarray
    weights: list[np.ndarray]  # W1, b1, W2, b2, W3, b3
    src_logf0: tuple[float, float]
    tgt_logf0: tuple[float, float]
    pool: np.ndarray  # [N, CODED_DIMS - 1] real target frames' shape (normalised), float32

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
            **arrays,
        )

    @classmethod
    def load(cls, path: Path) -> Conversion:
        with np.load(path) as z:
            n = sum(1 for k in z.files if k.startswith("w"))
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
            )

    def map_coded(self, coded: np.ndarray) -> np.ndarray:
        """The MLP's target-normalised shape (dims 1:) for base-voice coded envelopes [T, D]."""
        h = context_window((coded - self.src_mean) / self.src_std)
        w = self.weights
        for i in range(0, len(w) - 2, 2):
            h = np.maximum(h @ w[i] + w[i + 1], 0.0)
        return h @ w[-2] + w[-1]

    def convert(
        self, frames: Frames, map_coded: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> Frames:
        """The same frames (same count: same time axis) in the target's voice.

        `map_coded` runs the MLP instead of `self.map_coded` (the profile's exported ONNX graph,
        `onnx_mapper`); everything after it stays numpy.
        """
        mapped = (map_coded or self.map_coded)(frames.coded)
        # kNN-VC needs minutes of target speech: with less, the nearest real frames are often
        # other phonemes, so their share shrinks with the pool (full at KNN_FULL_S of speech).
        pool_s = len(self.pool) * FRAME_MS / 1000
        weight = KNN_WEIGHT * (min(1.0, pool_s / KNN_FULL_S) if KNN_FULL_S > 0 else 1.0)
        if weight > 0 and len(self.pool) > KNN_K:
            near = knn_mean(mapped, self.pool, KNN_K, self.pool)
            mapped = (1 - weight) * mapped + weight * near
        sounding = _sounding(frames.coded)
        if GV_STRENGTH > 0 and sounding.sum() > 10:
            centre = mapped[sounding].mean(0)
            ratio = self.pool.std(0) / (mapped[sounding].std(0) + 1e-6)
            mapped = centre + (mapped - centre) * ratio**GV_STRENGTH
        coded = frames.coded.copy()
        # The level contour (c0) stays the base voice's: it follows the words, whose timings
        # must hold, and loudness is normalised afterwards anyway.
        coded[:, 1:] = mapped * self.tgt_std[1:] + self.tgt_mean[1:]
        f0 = frames.f0.copy()
        v = f0 > 0
        (ms, ss), (mt, st) = self.src_logf0, self.tgt_logf0
        f0[v] = np.exp((np.log(f0[v]) - ms) / ss * st + mt)
        return Frames(f0=f0, coded=coded, ap=frames.ap, n_samples=frames.n_samples)


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


def log_f0_stats(f0s: Sequence[np.ndarray]) -> tuple[float, float]:
    voiced = np.concatenate([f[f > 0] for f in f0s])
    if len(voiced) < 10:
        raise ValueError("too few voiced frames to learn a pitch")
    lf = np.log(voiced)
    return float(lf.mean()), float(lf.std() + 1e-6)


def _sounding(coded: np.ndarray) -> np.ndarray:
    return coded[:, 0] > np.percentile(coded[:, 0], PAUSE_PERCENTILE)


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame pairs (ia, ib) of the cheapest monotonic alignment of a [Ta, D] and b [Tb, D]."""
    import librosa

    _, wp = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean", backtrack=True)
    wp = wp[::-1]
    return wp[:, 0], wp[:, 1]


def train(
    base: Sequence[Frames],
    target: Sequence[Frames],
    options: TrainOptions = TrainOptions(),
    progress: Callable[[str], None] = lambda _: None,
) -> Conversion:
    """Learn the conversion from utterance pairs (base voice, real target) of the same text."""
    import torch

    torch.manual_seed(options.seed)
    src_all = np.concatenate([f.coded for f in base])
    tgt_all = np.concatenate([f.coded for f in target])
    src_mean, src_std = src_all.mean(0), src_all.std(0) + 1e-6
    tgt_mean, tgt_std = tgt_all.mean(0), tgt_all.std(0) + 1e-6
    src_n = [(f.coded - src_mean) / src_std for f in base]
    tgt_n = [(f.coded - tgt_mean) / tgt_std for f in target]
    # Only sounding frames teach the mapping and fill the kNN pool: silence has no voice, and
    # DTW aligns pauses of different lengths arbitrarily.
    src_on = [_sounding(f.coded) for f in base]
    tgt_on = [_sounding(f.coded) for f in target]
    pool = np.concatenate([t[on, 1:] for t, on in zip(tgt_n, tgt_on, strict=True)])
    pool = pool.astype(np.float32)
    conv = Conversion(
        src_mean,
        src_std,
        tgt_mean,
        tgt_std,
        [],
        log_f0_stats([f.f0 for f in base]),
        log_f0_stats([f.f0 for f in target]),
        pool,
    )
    model = None
    for p in range(options.align_passes):
        xs, ys = [], []
        for s, t, s_on, t_on in zip(src_n, tgt_n, src_on, tgt_on, strict=True):
            # Align on the low cepstra of spectral shape, unnormalised (the mel-cepstral
            # distance): c0, the level, differs between recordings; high orders are noise.
            raw_t = t * tgt_std + tgt_mean
            raw_s = s * src_std + src_mean
            key = (
                raw_s[:, 1:]
                if model is None
                else (conv.map_coded(raw_s) * tgt_std[1:] + tgt_mean[1:])
            )
            ia, ib = dtw_path(key[:, : ALIGN_DIMS - 1], raw_t[:, 1:ALIGN_DIMS])
            keep = s_on[ia] & t_on[ib]
            xs.append(context_window(s)[ia[keep]])
            ys.append(t[ib[keep], 1:])
        x = torch.tensor(np.concatenate(xs), dtype=torch.float32)
        y = torch.tensor(np.concatenate(ys), dtype=torch.float32)
        progress(f"alignment pass {p + 1}/{options.align_passes}: {len(x)} frame pairs")
        model = _fit(x, y, options, progress)
        conv.weights = [
            t.detach().numpy().astype(np.float32).T
            if t.ndim == 2
            else t.detach().numpy().astype(np.float32)
            for t in model.parameters()
        ]
    return conv


FRAMES_PER_EPOCH = 200


def _fit(x, y, options: TrainOptions, progress: Callable[[str], None]):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    epochs = options.epochs or max(10, min(40, round(len(x) / FRAMES_PER_EPOCH)))
    d_in, h = x.shape[1], options.hidden
    model = nn.Sequential(
        nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, CODED_DIMS - 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(x)
    for epoch in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for s in range(0, n, options.batch):
            idx = perm[s : s + options.batch]
            loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            progress(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.3f}")
    return model


# ---- the MLP as an ONNX graph ------------------------------------------------------------------
#: The graph's input (coded envelopes [T, CODED_DIMS], float32) and output (the MLP's
#: target-normalised shape [T, CODED_DIMS - 1], float32): `Conversion.map_coded` exactly.
MAPPING_INPUT, MAPPING_OUTPUT = "CODED", "MAPPED"
#: Allowed ONNX Runtime vs PyTorch difference (normalised units, values ~N(0, 1)).
MAPPING_ATOL = 1e-4


def mapping_module(conv: Conversion):  # type: ignore[no-untyped-def]
    """`conv.map_coded` as a PyTorch module: normalisation, edge-padded context window, MLP."""
    import torch
    from torch import nn

    class Mapping(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(conv.src_mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(conv.src_std, dtype=torch.float32))
            layers: list[nn.Module] = []
            w = conv.weights
            for i in range(0, len(w), 2):
                linear = nn.Linear(int(w[i].shape[0]), int(w[i].shape[1]))
                linear.weight.data = torch.tensor(w[i].T, dtype=torch.float32)
                linear.bias.data = torch.tensor(w[i + 1], dtype=torch.float32)
                layers.append(linear)
                if i < len(w) - 2:
                    layers.append(nn.ReLU())
            self.mlp = nn.Sequential(*layers)

        def forward(self, coded):  # type: ignore[no-untyped-def]
            x = (coded - self.mean) / self.std
            # context_window: edges repeated, then each frame with its neighbours. Slices with
            # constant (negative) ends keep the graph valid for any number of frames.
            padded = torch.cat([x[:1].repeat(CONTEXT, 1), x, x[-1:].repeat(CONTEXT, 1)])
            width = 2 * CONTEXT
            h = torch.cat([padded[i : (i - width) or None] for i in range(width + 1)], dim=1)
            return self.mlp(h)

    return Mapping().eval()


def export_mapping(conv: Conversion, path: Path) -> float:
    """Write the MLP as ONNX to `path` (atomically: a temporary file renamed over it), checked
    against PyTorch and against `map_coded`; returns ONNX Runtime's max difference from PyTorch.
    """
    import os
    import warnings

    import torch

    module = mapping_module(conv)
    rng = np.random.default_rng(0)
    sample = (rng.standard_normal((400, CODED_DIMS)) * conv.src_std + conv.src_mean).astype(
        np.float32
    )
    with torch.no_grad():
        want = module(torch.from_numpy(sample)).numpy()
    numpy_diff = float(np.abs(conv.map_coded(sample.astype(np.float64)) - want).max())
    if numpy_diff > 1e-3:
        raise AssertionError(f"the mapping module differs from map_coded by {numpy_diff}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    axes = {0: "frames"}
    with warnings.catch_warnings():  # the legacy exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(sample[:50]),),
            str(tmp),
            input_names=[MAPPING_INPUT],
            output_names=[MAPPING_OUTPUT],
            dynamic_axes={MAPPING_INPUT: axes, MAPPING_OUTPUT: axes},
            opset_version=17,
            dynamo=False,
        )
    try:
        # Parity on another length than the traced one: the frame axis must stay dynamic.
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        diff = float(np.abs(onnx_mapper(session)(sample) - want).max())
        if diff > MAPPING_ATOL:
            raise AssertionError(
                f"{path.name}: ONNX Runtime differs from PyTorch by {diff} (allowed {MAPPING_ATOL})"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return diff


def onnx_mapper(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`map_coded` through an ONNX Runtime session of `export_mapping`'s graph."""

    def run(coded: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(coded, dtype=np.float32)
        (mapped,) = session.run([MAPPING_OUTPUT], {MAPPING_INPUT: x})
        return np.asarray(mapped)

    return run
