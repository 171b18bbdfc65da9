"""Audio -> mouth motion: Whisper encoder features (25 fps) -> a per-frame mouth shape.

Mouth shape: 53 MediaPipe mesh points (40 lip contour points, inner and outer, and 13 lower
jaw points) in a face-aligned frame (origin between the outer eye corners, x along the eye
line, one unit = the eye-corner distance 33-263), so it does not change with the face's place
or size in the frame. A shape is stored as PCA coefficients of its deviation from the person's
mean shape; `MouthBasis.decode` and `from_face_frame` turn predictions back into pixels of any
base frame, which is what the renderer draws.

Model: a small non-causal 1-D conv net over the feature sequence (receptive field +-8 frames,
320 ms each side), pretrained generically (scripts/pretrain_mouth.py, GRID talker s1) and
adapted per replica (`adapt`): fine-tuned on the replica's own speech with an L2 pull towards
the generic weights, then the amplitude calibrated on held-out folds of the replica's clips,
since a regressor trained for squared error under-articulates (lipsync findings: motion 0.35).
`MouthModel.lead` moves the output earlier by whole frames: the generic checkpoint needs 2
(its training clips' audio-video offset, doppel/assets/mouth_generic.md).

Torch is imported by the functions that need it only; callers set the thread count.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np

from doppel.errors import Stopped
from doppel.face import tracking

#: Lip contour (MediaPipe FACEMESH_LIPS): 20 outer then 20 inner points.
LIPS = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    78,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
    308,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
)
#: Lower face oval, left jaw angle to right jaw angle through the chin (152).
JAW = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397)
POINTS = LIPS + JAW
UPPER = POINTS.index(tracking.UPPER_INNER_LIP)
LOWER = POINTS.index(tracking.LOWER_INNER_LIP)
#: Gaussian sigma (frames) for the alignment transform: eye corners jitter by a pixel or two.
ALIGN_SIGMA = 2.0
FPS = 25


# --- shape representation ----------------------------------------------------------------------


def face_frames(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame similarity transform [T, 4] = (origin x, origin y, eye distance, angle) from
    the outer eye corners, smoothed over time.
    """
    from scipy.ndimage import gaussian_filter1d

    left = landmarks[:, tracking.EYE_OUTER_LEFT].astype(np.float64)
    right = landmarks[:, tracking.EYE_OUTER_RIGHT].astype(np.float64)
    d = right - left
    out = np.column_stack(
        [(left + right) / 2, np.linalg.norm(d, axis=1), np.unwrap(np.arctan2(d[:, 1], d[:, 0]))]
    )
    if len(out) > 1:
        out = gaussian_filter1d(out, ALIGN_SIGMA, axis=0, mode="nearest")
    return out


def to_face_frame(landmarks: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
    """Mesh landmarks [T, 478, 2] (pixels) -> mouth points [T, 53, 2] in the aligned frame."""
    frames = face_frames(landmarks) if frames is None else frames
    p = landmarks[:, POINTS].astype(np.float64) - frames[:, None, :2]
    c, s = np.cos(frames[:, 3]), np.sin(frames[:, 3])
    x = (p[..., 0] * c[:, None] + p[..., 1] * s[:, None]) / frames[:, 2:3]
    y = (-p[..., 0] * s[:, None] + p[..., 1] * c[:, None]) / frames[:, 2:3]
    return np.stack([x, y], axis=-1).astype(np.float32)


def from_face_frame(points: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Inverse of `to_face_frame`: aligned mouth points [T, 53, 2] -> pixels of the frames
    whose transforms are `frames` [T, 4] (e.g. a replica's base frames).
    """
    c, s = np.cos(frames[:, 3])[:, None], np.sin(frames[:, 3])[:, None]
    x = points[..., 0] * frames[:, 2:3]
    y = points[..., 1] * frames[:, 2:3]
    px = x * c - y * s + frames[:, None, 0]
    py = x * s + y * c + frames[:, None, 1]
    return np.stack([px, py], axis=-1).astype(np.float32)


def onto_mesh(points: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Full meshes [T, 478, 2] of base frames `base` (pixels) with their mouth points replaced by
    aligned mouth points [T, 53, 2]: the target a renderer draws on its base frames.
    """
    out = base.astype(np.float32).copy()
    out[:, list(POINTS)] = from_face_frame(points, face_frames(base))
    return out


#: The upper outer lip with the corners (indices into POINTS): fixed to the upper jaw, so where
#: it sits in the aligned frame says how the head is held (pitch moves it towards the eyes).
UPPER_OUTER = (0, 10, *range(11, 20))
#: Gaussian sigma (frames) of `anchor`'s offset: far slower than speech (syllables come at
#: 4-6 Hz), as fast as a nod.
ANCHOR_SIGMA = 10.0


def anchor(points: np.ndarray, own: np.ndarray, sigma: float = ANCHOR_SIGMA) -> np.ndarray:
    """Predicted aligned mouth points [T, 53, 2] moved onto the base frames' own mouth
    position `own` [T, 53, 2] (aligned points of the base frames): by the slowly varying
    offset between their upper outer lips. The aligned frame is built on the eyes, so a head
    tilted down brings the real mouth closer to them than the model predicts; drawn there, the
    mouth and chin land above the base frame's own, and the chin's shadow smears over the
    neck and collar below.
    """
    from scipy.ndimage import gaussian_filter1d

    up = list(UPPER_OUTER)
    offset = own[:, up].mean(axis=1) - points[:, up].mean(axis=1)
    if len(offset) > 1:
        offset = gaussian_filter1d(offset, sigma, axis=0, mode="nearest")
    return (points + offset[:, None, :]).astype(np.float32)


def opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip opening of aligned mouth points: quality.md's 13-14 over 33-263 (the aligned
    frame's unit is that eye distance).
    """
    return np.linalg.norm(points[:, UPPER] - points[:, LOWER], axis=-1).astype(np.float32)


@dataclasses.dataclass
class MouthBasis:
    """PCA of aligned mouth shapes' deviations from each person's mean shape."""

    components: np.ndarray  # [K, 106], orthonormal rows

    @classmethod
    def fit(cls, deviations: np.ndarray, k: int) -> MouthBasis:
        """`deviations` [N, 53, 2]: shapes minus their person's mean."""
        flat = deviations.reshape(len(deviations), -1).astype(np.float64)
        _, _, vt = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
        return cls(vt[:k].astype(np.float32))

    def encode(self, points: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Aligned points [T, 53, 2] -> coefficients [T, K]."""
        return ((points - mean).reshape(len(points), -1) @ self.components.T).astype(np.float32)

    def decode(self, coeffs: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Coefficients [T, K] -> aligned points [T, 53, 2] around the person's `mean`."""
        return (coeffs @ self.components).reshape(len(coeffs), len(POINTS), 2) + mean


# --- data ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Clip:
    """One utterance: features [T, 512] and aligned mouth points [T, 53, 2], same T."""

    features: np.ndarray
    points: np.ndarray


def extract_clip(
    path: Path, encoder: Any, tracker: tracking.FaceTracker, size: tuple[int, int] | None = None
) -> Clip:
    """Features (one encoder call for the clip, so it starts its own 30 s window, as inference
    does) and tracked mouth points of a talking clip at 25 fps.
    """
    import asyncio

    from doppel.audio import media
    from doppel.face import video

    audio = asyncio.run(media.decode_audio(path))
    feats = encoder.encode([audio.samples])[0]
    track = tracker.track(video.read_frames(path, size=size, fps=FPS), detect_every=1_000_000)
    n = min(len(feats), track.frame_count)
    return Clip(feats[:n], to_face_frame(track.landmarks[:n]))


# --- model ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class NetConfig:
    dim_in: int = 512
    width: int = 160
    kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 1)
    dropout: float = 0.2
    k: int = 16


def build_net(cfg: NetConfig) -> Any:
    """Features [B, T, 512] -> coefficients [B, T, K], same T (zero-padded convolutions)."""
    import torch
    from torch import nn

    class MouthNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv1d(cfg.dim_in, cfg.width, 1)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(
                nn.Conv1d(
                    cfg.width, cfg.width, cfg.kernel, dilation=d, padding=d * (cfg.kernel // 2)
                )
                for d in cfg.dilations
            )
            self.out = nn.Conv1d(cfg.width, cfg.k, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = nn.functional.gelu(self.inp(self.drop(x.transpose(1, 2))))
            for block in self.blocks:
                h = h + nn.functional.gelu(block(self.drop(h)))
            return self.out(h).transpose(1, 2)  # type: ignore[no-any-return]

    return MouthNet()


@dataclasses.dataclass
class MouthModel:
    """A net with what it needs to turn features into aligned mouth points for one person."""

    net: Any
    cfg: NetConfig
    basis: MouthBasis
    feat_mean: np.ndarray  # [512], standardises the features
    feat_std: np.ndarray
    coef_scale: np.ndarray  # [K], the net predicts coefficients / coef_scale
    mean_shape: np.ndarray  # [53, 2], the person's mean aligned shape
    gain: float = 1.0  # amplitude calibration of the deviation from the mean
    #: Frames the output is moved earlier: the net's frame t + lead is the shape at t.
    lead: int = 0

    def coefficients(self, features: np.ndarray) -> np.ndarray:
        """Features [T, 512] -> PCA coefficients [T, K] (gain applied)."""
        import torch

        x = torch.from_numpy((features - self.feat_mean) / self.feat_std).float()[None]
        self.net.eval()
        with torch.no_grad():
            y = self.net(x)[0].numpy()
        if self.lead:
            y = np.concatenate([y[self.lead :], np.repeat(y[-1:], min(self.lead, len(y)), 0)])
        return (y * self.coef_scale * self.gain).astype(np.float32)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Features [T, 512] -> aligned mouth points [T, 53, 2]."""
        return self.basis.decode(self.coefficients(features), self.mean_shape)

    def save(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        import torch

        state = {k: v.half() for k, v in self.net.state_dict().items()}  # half: size
        torch.save(
            {
                "net": state,
                "cfg": dataclasses.asdict(self.cfg),
                "components": torch.from_numpy(self.basis.components),
                "feat_mean": torch.from_numpy(self.feat_mean),
                "feat_std": torch.from_numpy(self.feat_std),
                "coef_scale": torch.from_numpy(self.coef_scale),
                "mean_shape": torch.from_numpy(self.mean_shape),
                "gain": self.gain,
                "lead": self.lead,
                "meta": meta or {},
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> MouthModel:
        import torch

        d = torch.load(path, map_location="cpu", weights_only=True)
        cfg = NetConfig(**{**d["cfg"], "dilations": tuple(d["cfg"]["dilations"])})
        net = build_net(cfg)
        net.load_state_dict({k: v.float() for k, v in d["net"].items()})
        return cls(
            net,
            cfg,
            MouthBasis(d["components"].numpy()),
            d["feat_mean"].numpy(),
            d["feat_std"].numpy(),
            d["coef_scale"].numpy(),
            d["mean_shape"].numpy(),
            float(d["gain"]),
            int(d.get("lead", 0)),
        )


def person_mean(clips: list[Clip]) -> np.ndarray:
    return np.concatenate([c.points for c in clips]).mean(axis=0).astype(np.float32)


def train(
    model: MouthModel,
    clips: list[Clip],
    *,
    steps: int,
    lr: float,
    batch: int = 16,
    window: int = 64,
    seed: int = 0,
    anchor: float = 0.0,
    log_every: int = 0,
    stop: threading.Event | None = None,
) -> None:
    """Fit `model.net` to `clips` (targets: coefficients around `model.mean_shape`) on random
    windows; `anchor` > 0 pulls weights towards their starting values (L2-SP), which is what
    keeps a fine-tune on seconds of speech from forgetting the generic model. A set `stop`
    ends it with `Stopped` at the next step.
    """
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    xs = [((c.features - model.feat_mean) / model.feat_std).astype(np.float32) for c in clips]
    ys = [model.basis.encode(c.points, model.mean_shape) / model.coef_scale for c in clips]
    lengths = np.array([len(x) for x in xs])
    win = int(min(window, lengths.min()))
    start = {k: v.detach().clone() for k, v in model.net.named_parameters()}
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=1e-4 if not anchor else 0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    weights = lengths / lengths.sum()
    model.net.train()
    for step in range(steps):
        if stop is not None and stop.is_set():
            raise Stopped("mouth training stopped")
        idx = rng.choice(len(xs), size=batch, p=weights)
        offs = [rng.integers(0, lengths[i] - win + 1) for i in idx]
        x = torch.from_numpy(np.stack([xs[i][o : o + win] for i, o in zip(idx, offs, strict=True)]))
        y = torch.from_numpy(np.stack([ys[i][o : o + win] for i, o in zip(idx, offs, strict=True)]))
        x = x + 0.1 * torch.randn_like(x)
        pred = model.net(x)
        if model.lead:
            pred, y = pred[:, model.lead :], y[:, : -model.lead]
        loss = ((pred - y) ** 2).mean() + 0.5 * ((pred.diff(dim=1) - y.diff(dim=1)) ** 2).mean()
        if anchor:
            loss = loss + anchor * sum(
                ((p - start[k]) ** 2).sum() for k, p in model.net.named_parameters()
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d} loss {loss.item():.4f}", flush=True)
    model.net.eval()


def new_model(clips: list[Clip], cfg: NetConfig, seed: int = 0) -> MouthModel:
    """An untrained model whose basis, feature and coefficient statistics come from `clips`
    (one person's clips, or one list per person concatenated after centring each person).
    """
    import torch

    torch.manual_seed(seed)
    feats = np.concatenate([c.features for c in clips])
    mean = person_mean(clips)
    dev = np.concatenate([c.points for c in clips]) - mean
    basis = MouthBasis.fit(dev, cfg.k)
    coefs = basis.encode(dev + mean, mean)
    return MouthModel(
        build_net(cfg),
        cfg,
        basis,
        feats.mean(axis=0).astype(np.float32),
        feats.std(axis=0).astype(np.float32) + 1e-3,
        coefs.std(axis=0).astype(np.float32) + 1e-6,
        mean,
    )


def _copy(model: MouthModel) -> MouthModel:
    net = build_net(model.cfg)
    net.load_state_dict(model.net.state_dict())
    return dataclasses.replace(model, net=net)


def calibrate_gain(preds: list[np.ndarray], reals: list[np.ndarray]) -> float:
    """Scale that gives held-out predictions the real inner-lip opening's spread, from
    per-clip standard deviations (clamped: never shrink, never more than 3x).
    """
    p = np.mean([np.std(opening(x)) for x in preds])
    r = np.mean([np.std(opening(x)) for x in reals])
    return float(np.clip(r / max(p, 1e-6), 1.0, 3.0))


def adapt(
    generic: MouthModel,
    clips: list[Clip],
    *,
    steps: int = 400,
    lr: float = 1e-3,
    anchor: float = 1e-4,
    folds: int = 3,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> MouthModel:
    """A replica's model from the generic one and the replica's own clips: the replica's mean
    shape, a fine-tune anchored to the generic weights, and a gain calibrated on folds of the
    clips held out from that fold's fine-tune (the same recipe, so the gain is the one the
    final model needs on speech it never heard).
    """
    base = dataclasses.replace(generic, mean_shape=person_mean(clips), gain=1.0)
    preds, reals = [], []
    folds = min(folds, len(clips))
    if folds >= 2:
        for f in range(folds):
            held = [c for i, c in enumerate(clips) if i % folds == f]
            rest = [c for i, c in enumerate(clips) if i % folds != f]
            m = _copy(dataclasses.replace(base, mean_shape=person_mean(rest)))
            train(m, rest, steps=steps, lr=lr, anchor=anchor, seed=seed + f, batch=8, stop=stop)
            preds += [m.predict(c.features) for c in held]
            reals += [c.points for c in held]
    model = _copy(base)
    train(model, clips, steps=steps, lr=lr, anchor=anchor, seed=seed, batch=8, stop=stop)
    if preds:
        model.gain = calibrate_gain(preds, reals)
    return model
