"""The talking-head renderer: a per-replica network that paints the lower face for a target
mouth shape onto a base frame.

Design (from the lip-sync study in shared/docs/findings-lipsync.md, whose plain U-Net followed
the target shape but smeared lips and teeth: sharpness 0.06-0.11):

* Region: a square around mouth and chin, aligned on the face crop of `tracking.crop_boxes`
  (upright, eyes level), `SIZE` pixels (about 0.75-0.9x native for a 720p head-and-shoulders
  video, so little texture is lost to scaling).
* Inputs, 7 channels: the base frame's region with the lower face blanked (`input_mask`), a
  *reference*: a real frame of the person whose mouth shape is nearest the target (retrieval by
  shape, as in "Synthesizing Obama"), warped piecewise-linearly from its own landmarks to the
  target landmarks, and a sketch of the target mouth (inner mouth, lips, jaw line).
* Output: the warped reference plus a learned correction, so the sharp texture of real lips and
  teeth passes straight through where the warp is right, and the network paints only where it
  is not (seams, lighting, the inner mouth, the jaw line).
* Self-supervised training: every training frame is its own target (its tracked mouth drawn,
  its lower face blanked), with a reference taken from at least a second away in the video.

Torch is imported by the functions that need it only; callers set the thread count.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from doppel.errors import Stopped
from doppel.face import mouth, tracking

#: Side of the rendered square (pixels). The network is fully convolutional, but the export and
#: the Triton config fix it, so one number rules all.
SIZE = 160
#: The region within the face crop (`tracking.crop_boxes`): its side is REGION_SIDE x the face
#: crop's side, and its centre REGION_DY x that side below the face crop's centre. Covers from
#: the nostrils to below the chin with the mouth wide open.
REGION_SIDE = 0.42
REGION_DY = 0.30
CHANNELS = 7
#: Landmarks that drive the reference warp: mouth and jaw (`mouth.POINTS`), the nose base and
#: the cheeks, which carry the rest of the lower face along.
WARP_POINTS = tuple(mouth.POINTS) + (
    1,
    2,
    4,
    5,
    97,
    98,
    326,
    327,
    164,
    205,
    425,
    36,
    266,
    187,
    411,
    50,
    280,
    207,
    427,
    212,
    432,
    214,
    434,
    135,
    364,
    58,
    288,
    132,
    361,
)
_OUTER = list(range(20))
_INNER = list(range(20, 40))
_JAW = list(range(40, 53))
#: Minimum distance (frames) between a training target and its reference, so the network never
#: learns to copy a near-identical neighbour (at render time the reference never is the target).
MIN_REFERENCE_GAP = 25


# --- geometry ------------------------------------------------------------------------------------


def region_boxes(face_boxes: np.ndarray) -> np.ndarray:
    """Face crop boxes [T, 4] (cx, cy, side, angle) -> lower-face region boxes, same layout."""
    boxes = np.asarray(face_boxes, np.float64).reshape(-1, 4)
    cx, cy, side, angle = boxes.T
    dy = REGION_DY * side
    # The crop's y axis in the image is (-sin, cos) of its angle.
    out = np.column_stack(
        [cx - np.sin(angle) * dy, cy + np.cos(angle) * dy, side * REGION_SIDE, angle]
    )
    return out.astype(np.float32)


def to_region(points: np.ndarray, box: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Pixel points [..., 2] of a frame -> pixel coordinates in its region crop."""
    m = tracking.crop_matrix(box, size)
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def input_mask(size: int = SIZE) -> np.ndarray:
    """[size, size] float32: 1 where the base frame is hidden from the network (mouth, jaw,
    chin, with margin for the mouth wide open), 0 where it is shown. An ellipse: no corners
    for a seam to show at, and the jaw angles and nose stay the base frame's own.
    """
    import cv2

    mask = np.zeros((size, size), np.float32)
    s = size / 160
    # Nostrils to just below the chin (the collar stays the base frame's: a reference's collar
    # sits elsewhere relative to its jaw and smeared into the chin).
    centre, axes = (round(80 * s), round(90 * s)), (round(64 * s), round(58 * s))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, (1.0,), thickness=-1)
    return mask


#: Lower lip and chin (indices into `mouth.POINTS`): the part of the base frame's own mouth
#: that must be hidden wherever it is, or an open base mouth leaves a second chin showing.
_CHIN = list(range(0, 20)) + list(range(40 + 2, 40 + 11))


def frame_mask(base_points: np.ndarray | None, size: int = SIZE) -> np.ndarray:
    """The hidden area for one base frame: `input_mask` plus the base frame's own lips and chin
    (hull of those points in region coordinates, grown by a margin).
    """
    import cv2

    mask = input_mask(size)
    if base_points is None:
        return mask
    s = size / 160
    hull = cv2.convexHull(np.round(base_points[_CHIN]).astype(np.int32))
    own = np.zeros_like(mask)
    cv2.fillConvexPoly(own, hull, (1.0,))
    own = cv2.dilate(own, np.ones((round(11 * s), round(11 * s)), np.uint8))
    return np.maximum(mask, own)


def paint_mask(
    target_points: np.ndarray,
    base_points: np.ndarray,
    hidden: np.ndarray,
    *,
    margin: float = 8.0,
) -> np.ndarray:
    """The part of the hidden area `hidden` that compositing takes from the network: lips and
    chin of the target and of the base frame (hulls of `_CHIN` of each, region coordinates),
    grown by `margin` pixels at SIZE scale. The rest of the hidden area keeps the base frame's
    own pixels: the neck and collar below both chins (on a lowered head the hidden ellipse
    reaches well past the chin) and the corners beside the nose. The network repaints those
    from a reference taken at another moment, softer and with the reference's shadows (a dark
    smear over the collar).
    """
    import cv2

    size = hidden.shape[0]
    area = np.zeros_like(hidden)
    for points in (target_points, base_points):
        hull = cv2.convexHull(np.round(points[_CHIN]).astype(np.int32))
        cv2.fillConvexPoly(area, hull, (1.0,))
        # Grown by drawing its outline `margin` thick on each side (round joins: a disc).
        cv2.polylines(area, [hull], True, (1.0,), max(1, round(2 * margin * size / SIZE)))
    return np.minimum(hidden, area)


def lips_mask(target_points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[size, size] float32, soft: the target's lips (hull of the outer lip contour, grown a
    little): where `composite.Compositor` restores detail.
    """
    import cv2

    s = size / SIZE
    mask = np.zeros((size, size), np.float32)
    hull = cv2.convexHull(np.round(target_points[_OUTER]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (1.0,))
    k = max(1, round(5 * s))
    grown = cv2.dilate(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(grown, (0, 0), 2.0 * s)  # type: ignore[no-any-return]


def blend_mask(size: int = SIZE, core: np.ndarray | None = None) -> np.ndarray:
    """[size, size] float32 compositing weight: 1 over the area taken from the network (`core`:
    `paint_mask`, or the hidden area, by default `input_mask`), falling smoothly to 0 through a
    narrow ring around it and before the region's border. Seamless because the network paints
    its hidden area to fit the base frame shown around it, and the colour correction removes
    what offset remains at the ring.
    """
    import cv2

    s = size / 160
    core = input_mask(size) if core is None else core
    # A narrow ring (a few pixels): each pixel of it mixes the network's softer picture into
    # the frame's own, sharper pixels.
    grown = cv2.dilate(core, np.ones((round(3 * s), round(3 * s)), np.uint8))
    soft = cv2.GaussianBlur(grown, (0, 0), 2.0 * s)
    edge = np.minimum.outer(*(2 * [np.minimum(np.arange(size), np.arange(size)[::-1])]))
    fade = np.clip(edge / (6.0 * s), 0.0, 1.0)
    return np.clip(np.maximum(soft, core) * fade, 0.0, 1.0).astype(np.float32)


def sketch(mouth_points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[size, size] float32 drawing of the 53 mouth points (region coordinates): inner mouth
    filled 1.0, lips 0.5, jaw line 0.75.
    """
    import cv2

    img = np.zeros((size, size), np.float32)
    pts = np.round(mouth_points * 4).astype(np.int32)  # 2 fractional bits for cv2's shift
    cv2.fillPoly(img, [pts[_OUTER]], (0.5,), lineType=cv2.LINE_AA, shift=2)
    cv2.fillPoly(img, [pts[_INNER]], (1.0,), lineType=cv2.LINE_AA, shift=2)
    cv2.polylines(img, [pts[_JAW]], False, (0.75,), thickness=2, lineType=cv2.LINE_AA, shift=2)
    return img


def warp_to(
    image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, grid: int = 40
) -> np.ndarray:
    """Warp `image` (a region crop) so its landmarks `src_points` land on `dst_points`
    (region coordinates): piecewise-linear over a Delaunay triangulation of the target points
    and the crop's border (held in place), sampled on a coarse grid and interpolated.
    """
    import cv2
    from scipy.interpolate import LinearNDInterpolator

    size = image.shape[0]
    edge = np.linspace(0, size - 1, 9)
    border = np.concatenate(
        [
            np.column_stack([edge, np.zeros_like(edge)]),
            np.column_stack([edge, np.full_like(edge, size - 1)]),
            np.column_stack([np.zeros_like(edge), edge]),
            np.column_stack([np.full_like(edge, size - 1), edge]),
        ]
    )
    inside = np.all((dst_points > 2) & (dst_points < size - 3), axis=1)
    dst = np.concatenate([dst_points[inside], border]).astype(np.float64)
    src = np.concatenate([src_points[inside], border]).astype(np.float64)
    lin = np.linspace(0, size - 1, grid)
    gx, gy = np.meshgrid(lin, lin)
    mapped = LinearNDInterpolator(dst, src)(gx.ravel(), gy.ravel()).reshape(grid, grid, 2)
    mapped = np.where(np.isfinite(mapped), mapped, np.stack([gx, gy], axis=-1))
    full = cv2.resize(mapped.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    # Bicubic: each resampling on the way from the person's frames to the output loses detail.
    return cv2.remap(  # type: ignore[no-any-return]
        image, full[..., 0], full[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def make_input(
    base: np.ndarray,
    target_points: np.ndarray,
    reference: np.ndarray,
    reference_points: np.ndarray,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """One network input [7, S, S] uint8 from a base region crop [S, S, 3], the target warp
    points (region coordinates, `WARP_POINTS` order), and a reference crop with its points;
    `mask`: the hidden area (`frame_mask` of the base frame's points).
    """
    mask = input_mask(base.shape[0]) if mask is None else mask
    warped = match_colour(warp_to(reference, reference_points, target_points), base, mask)
    hidden = (base * (1.0 - mask[..., None])).astype(np.uint8)
    drawn = (sketch(target_points[: len(mouth.POINTS)], base.shape[0]) * 255).astype(np.uint8)
    return np.concatenate([hidden.transpose(2, 0, 1), warped.transpose(2, 0, 1), drawn[None]])


def match_colour(image: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`image` with each channel's mean and spread matched to `base` over the area the network
    sees of the base (mask 0): references come from other moments, other light; without this
    the painted mouth carries the reference's colour into the frame.

    A per-channel affine map of 8-bit values, applied as a lookup table (the statistics and the
    table in OpenCV: this runs on every frame of every render).
    """
    import cv2

    seen = (mask < 0.5).astype(np.uint8)
    mean_a, std_a = (v.ravel() for v in cv2.meanStdDev(image, mask=seen))
    mean_b, std_b = (v.ravel() for v in cv2.meanStdDev(base, mask=seen))
    gain = np.clip(std_b / np.maximum(std_a, 1.0), 0.7, 1.4)
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip((levels - mean_a) * gain + mean_b + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image), table.reshape(256, 1, 3))  # type: ignore[no-any-return]


# --- reference retrieval ---------------------------------------------------------------------


def shape_vectors(aligned: np.ndarray) -> np.ndarray:
    """Aligned mouth points [T, 53, 2] -> retrieval vectors; the lips count double (they carry
    the texture that matters) and the jaw once.
    """
    w = np.ones(len(mouth.POINTS), np.float32)
    w[: len(_OUTER) + len(_INNER)] = 2.0
    return (aligned * w[None, :, None]).reshape(len(aligned), -1).astype(np.float32)


def choose_references(
    queries: np.ndarray,
    bank: np.ndarray,
    bank_frames: np.ndarray,
    *,
    candidates: int = 8,
    switch_cost: float = 0.5,
) -> np.ndarray:
    """Reference index into `bank` for each query shape, smooth in time: a Viterbi path over
    each frame's `candidates` nearest bank shapes, where staying on consecutive bank frames
    (bank_frames[j] == bank_frames[i] + 1) is free and any other jump costs `switch_cost` times
    the median nearest distance (texture that jumps every frame flickers).
    """
    q = shape_vectors(queries)
    b = shape_vectors(bank)
    d = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # [T, M]
    k = min(candidates, len(b))
    cand = np.argsort(d, axis=1)[:, :k]
    cost = np.take_along_axis(d, cand, axis=1)
    scale = float(np.median(cost[:, 0])) + 1e-9
    cost = cost / scale
    total = cost[0].copy()
    back = np.zeros((len(q), k), np.int64)
    for t in range(1, len(q)):
        prev, cur = bank_frames[cand[t - 1]], bank_frames[cand[t]]
        jump = np.where(cur[None, :] == prev[:, None] + 1, 0.0, switch_cost)
        jump = np.where(cand[t][None, :] == cand[t - 1][:, None], 0.3 * switch_cost, jump)
        step = total[:, None] + jump
        back[t] = np.argmin(step, axis=0)
        total = step[back[t], np.arange(k)] + cost[t]
    path = np.zeros(len(q), np.int64)
    path[-1] = int(np.argmin(total))
    for t in range(len(q) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return cand[np.arange(len(q)), path]


def training_references(
    aligned: np.ndarray, frames: np.ndarray, count: int = 3, gap: int = MIN_REFERENCE_GAP
) -> np.ndarray:
    """[T, count] nearest shapes for each training frame among frames at least `gap` away."""
    v = shape_vectors(aligned)
    d = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    near = np.abs(frames[:, None] - frames[None, :]) < gap
    d[near] = np.inf
    return np.argsort(d, axis=1)[:, :count]


# --- network ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RendererConfig:
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    decoder_top: tuple[int, int] = (24, 16)  # channels of the two full-resolution-ish stages


def build_net(cfg: RendererConfig | None = None) -> Any:
    """U-Net [B, 7, S, S] float in 0..1 -> [B, 3, S, S] about 0..1: the warped reference
    (channels 3-5) plus a learned correction (starts at zero: the untrained net copies it).
    """
    import torch
    from torch import nn

    conf = cfg or RendererConfig()
    w = conf.widths

    def conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))

    class Renderer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e0 = conv(CHANNELS, w[0])
            self.e1 = nn.Sequential(conv(w[0], w[1], 2), conv(w[1], w[1]))
            self.e2 = nn.Sequential(conv(w[1], w[2], 2), conv(w[2], w[2]))
            self.e3 = nn.Sequential(conv(w[2], w[3], 2), conv(w[3], w[3]))
            self.e4 = nn.Sequential(conv(w[3], w[4], 2), conv(w[4], w[4]), conv(w[4], w[4]))
            self.d3 = conv(w[4] + w[3], w[3])
            self.d2 = conv(w[3] + w[2], w[2])
            self.d1 = conv(w[2] + w[1], conf.decoder_top[0])
            self.d0 = conv(conf.decoder_top[0] + w[0], conf.decoder_top[1])
            self.out = nn.Conv2d(conf.decoder_top[1], 3, 3, 1, 1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]
            self.up = nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x0 = self.e0(x)
            x1 = self.e1(x0)
            x2 = self.e2(x1)
            x3 = self.e3(x2)
            h = self.e4(x3)
            h = self.d3(torch.cat([self.up(h), x3], 1))
            h = self.d2(torch.cat([self.up(h), x2], 1))
            h = self.d1(torch.cat([self.up(h), x1], 1))
            h = self.d0(torch.cat([self.up(h), x0], 1))
            # The warped reference plus a learned correction: gradients always reach the
            # network (a learned mix weight saturated at "copy the reference" and stopped
            # learning), and the reference's real texture passes through where it is right.
            return x[:, 3:6] + self.out(h)

    return Renderer()


def uint8_wrapper(net: Any) -> Any:
    """The exported graph: uint8 [B, 7, S, S] -> uint8 [B, 3, S, S] (conversions inside, so
    Triton moves a quarter of the bytes).
    """
    import torch
    from torch import nn

    class Uint8Renderer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.net(x.float() / 255.0)
            return torch.clamp(y * 255.0 + 0.5, 0, 255).to(torch.uint8)

    return Uint8Renderer().eval()


# --- training data -----------------------------------------------------------------------------


@dataclasses.dataclass
class TrainingSet:
    """A replica's frames as the renderer sees them."""

    crops: np.ndarray  # [T, S, S, 3] uint8 region crops
    points: np.ndarray  # [T, P, 2] WARP_POINTS in region coordinates
    aligned: np.ndarray  # [T, 53, 2] aligned mouth points (retrieval)
    frames: np.ndarray  # [T] frame index in the training video (gaps between sources)


def crop_regions(
    frames: Sequence[np.ndarray] | Any,
    landmarks: np.ndarray,
    face_boxes: np.ndarray,
    size: int = SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Region crops [T, S, S, 3] and warp points [T, P, 2] of frames with their landmarks."""
    boxes = region_boxes(face_boxes)
    crops, points = [], []
    for i, frame in enumerate(frames):
        if i >= len(boxes):
            break
        crops.append(tracking.crop_face(frame, boxes[i], size, sharp=True))
        points.append(to_region(landmarks[i, list(WARP_POINTS)], boxes[i], size))
    return np.stack(crops), np.stack(points)


@dataclasses.dataclass
class TrainConfig:
    steps: int = 600
    batch: int = 8
    lr: float = 2e-3
    references: int = 3
    seed: int = 0
    #: Loss weights: L1 over the crop, extra L1 inside the hidden area, image-gradient L1 there.
    hidden_weight: float = 2.0
    gradient_weight: float = 1.0
    #: "bf16": the forward pass under bfloat16 autocast (weights, optimiser and loss stay
    #: float32): 1.8x faster a step where the CPU multiplies bfloat16 natively (AVX512-BF16 or
    #: AMX), and slower where it does not; "fp32"; "auto": bf16 where it is native.
    precision: str = "auto"


def training_precision(cfg: TrainConfig) -> str:
    """The precision `train` uses for `cfg` on this machine ("bf16" or "fp32")."""
    import torch

    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {cfg.precision!r}")
    if cfg.precision != "auto":
        return cfg.precision
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


#: How often (steps) `train` asks its `threads` callable.
THREAD_CHECK = 10


def prepare_inputs(
    data: TrainingSet,
    refs: np.ndarray,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    needed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs of the frames with their reference choices `refs` [T, R] (the frame is
    its own base): [N, 7, S, S] uint8 inputs, [T, R] their row in it (-1: not prepared), and
    [T, S, S] uint8 hidden masks. `needed` [T, R] bool: the pairs to prepare (default all).
    """
    size = data.crops.shape[1]
    want = np.ones(refs.shape, bool) if needed is None else needed
    slots = np.full(refs.shape, -1, np.int64)
    slots[want] = np.arange(int(want.sum()))
    out = np.empty((int(want.sum()), CHANNELS, size, size), np.uint8)
    masks = np.zeros((len(data.crops), size, size), np.uint8)
    for t in range(len(data.crops)):
        if stop is not None and stop.is_set():
            raise Stopped("renderer input preparation stopped")
        if progress and t % 200 == 0:
            progress(f"renderer inputs {t}/{len(data.crops)}")
        if not want[t].any():
            continue
        mask = frame_mask(data.points[t, : len(mouth.POINTS)], size)
        masks[t] = mask > 0.5
        for r, j in enumerate(refs[t]):
            if want[t, r]:
                out[slots[t, r]] = make_input(
                    data.crops[t], data.points[t], data.crops[j], data.points[j], mask
                )
    return out, slots, masks


def train(
    data: TrainingSet,
    cfg: TrainConfig | None = None,
    *,
    net_cfg: RendererConfig | None = None,
    progress: Callable[[str], None] | None = None,
    threads: Callable[[], int] | None = None,
    stop: threading.Event | None = None,
    before_training: Callable[[], None] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Train a renderer on one replica's frames; returns (net, stats).

    `threads`, asked every `THREAD_CHECK` steps: the torch threads to train with from then on
    (the caller's other work may end or start meanwhile; unset: leave them as they are). A set
    `stop` ends training with `Stopped` at the next step. `before_training` is called once
    the inputs are ready, before the first use of torch's (process-wide) random generator: a
    caller may hold training there while other torch work of its own finishes (torch.manual_seed
    and the draws of a job in another thread would interleave with these).
    """
    import torch

    cfg = cfg or TrainConfig()
    say = progress or (lambda _: None)
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    refs = training_references(data.aligned, data.frames, cfg.references)
    # Every step's batch drawn up front (the generator serves nothing else, so the draws are
    # the ones the loop made before), and only the (frame, reference) pairs drawn are prepared:
    # the same training for less work once a video has more pairs than steps x batch draws.
    draws = [
        (rng.integers(0, len(data.crops), cfg.batch), rng.integers(0, refs.shape[1], cfg.batch))
        for _ in range(cfg.steps)
    ]
    needed = np.zeros(refs.shape, bool)
    for idx, which in draws:
        needed[idx, which] = True
    inputs, slots, masks = prepare_inputs(data, refs, say, stop, needed)
    prep_s = time.perf_counter() - start
    say(
        f"renderer inputs ready ({len(inputs)} of {len(data.crops)} frames x {refs.shape[1]} "
        f"references drawn, {prep_s:.0f} s)"
    )
    targets = data.crops.transpose(0, 3, 1, 2)
    waited = time.perf_counter()
    if before_training is not None:
        before_training()
    waited = time.perf_counter() - waited
    torch.manual_seed(cfg.seed)
    # Channels-last activations: oneDNN's convolutions on this layout need no reorders between
    # layers (about 12% less time a step on one thread). The net goes back to the default
    # layout before it is returned (export and inference code assume it).
    net = build_net(net_cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    net.train()
    precision = training_precision(cfg)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    losses = []
    for step in range(cfg.steps):
        if stop is not None and stop.is_set():
            raise Stopped("renderer training stopped")
        if threads is not None and step % THREAD_CHECK == 0:
            wanted = max(1, threads())
            if wanted != torch.get_num_threads():
                torch.set_num_threads(wanted)
        idx, which = draws[step]
        x = torch.from_numpy(inputs[slots[idx, which]]).float() / 255.0
        y = torch.from_numpy(targets[idx]).float() / 255.0
        hidden = torch.from_numpy(masks[idx]).float()[:, None]
        # Lighting differs between a frame and its reference: jitter the reference's gain and
        # offset so the network learns to take colour from the base frame, shape from the rest.
        gain = 1.0 + 0.08 * torch.randn(cfg.batch, 1, 1, 1)
        bias = 0.03 * torch.randn(cfg.batch, 3, 1, 1)
        x[:, 3:6] = (x[:, 3:6] * gain + bias).clamp(0, 1)
        with autocast:
            pred = net(x.contiguous(memory_format=torch.channels_last))
        pred = pred.float()
        err = (pred - y).abs()
        loss = err.mean() + cfg.hidden_weight * (err * hidden).mean()
        if cfg.gradient_weight:
            gx = lambda a: a[..., :, 1:] - a[..., :, :-1]  # noqa: E731
            gy = lambda a: a[..., 1:, :] - a[..., :-1, :]  # noqa: E731
            loss = loss + cfg.gradient_weight * (
                ((gx(pred) - gx(y)).abs() * hidden[..., :, 1:]).mean()
                + ((gy(pred) - gy(y)).abs() * hidden[..., 1:, :]).mean()
            )
        opt.zero_grad()
        loss.backward()
        # The correction is unbounded (no output squashing, so gradients never vanish): clip,
        # or one bad step at the peak learning rate throws the weights far off.
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        if step % 100 == 0 or step == cfg.steps - 1:
            say(f"renderer step {step + 1}/{cfg.steps} loss {np.mean(losses[-100:]):.4f}")
    net = net.to(memory_format=torch.contiguous_format).eval()
    stats = {
        "prepare_s": prep_s,
        "waited_s": waited,
        "train_s": time.perf_counter() - start - prep_s - waited,
        "final_loss": float(np.mean(losses[-100:])),
        "steps": cfg.steps,
        "bf16": precision == "bf16",
        "frames": len(data.crops),
        "inputs": len(inputs),
    }
    return net, stats


def render_batch(net: Any, inputs: np.ndarray) -> np.ndarray:
    """In-process inference (tests, export checks): uint8 [B, 7, S, S] -> uint8 [B, 3, S, S]."""
    import torch

    with torch.no_grad():
        return uint8_wrapper(net)(torch.from_numpy(inputs)).numpy()  # type: ignore[no-any-return]
