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

The region, its masks, the sketch, the reference warp and the reference choice are in
`regions`. Torch is imported by the functions that need it only; callers set the thread count.
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
from doppel.face.regions import (
    CHANNELS,
    SIZE,
    WARP_POINTS,
    frame_mask,
    make_input,
    region_boxes,
    to_region,
    training_references,
)
from doppel.platform.progress import Progress, Report, ignore

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


#: `train`'s progress stages: its inputs prepared (frames), then its training steps.
STAGE_INPUTS = "renderer inputs"
STAGE = "renderer"
#: How often (steps) `train` asks its `threads` callable.
THREAD_CHECK = 10


def prepare_inputs(
    data: TrainingSet,
    refs: np.ndarray,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    needed: np.ndarray | None = None,
    report: Report = ignore,
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
        if t % 200 == 0:
            if progress:
                progress(f"renderer inputs {t}/{len(data.crops)}")
            report(Progress(STAGE_INPUTS, t, len(data.crops)))
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
    report: Report = ignore,
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
    and the draws of a job in another thread would interleave with these). `progress` gets
    lines for people, `report` Progress(STAGE_INPUTS, frame, frames) and (STAGE, step, steps).
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
    inputs, slots, masks = prepare_inputs(data, refs, say, stop, needed, report)
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
            report(Progress(STAGE, step + 1, cfg.steps))
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
