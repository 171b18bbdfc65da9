"""The frame pipeline: base frames -> face crops -> painted mouths -> composited, marked frames,
written in order to a `FrameSink` (an MP4 file, or a live call's video track).

What paints the mouth region is a `Painter`; the replica's trained renderer (`NeuralPainter`) is
the engine's. The evaluation's baselines are other painters (benchmarks/quality/baselines.py).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from doppel.face import composite, regions, tracking
from doppel.platform.progress import Progress, Report
from doppel.render.plan import Base, Plan, Planner
from doppel.replica.artefact import Bank

#: Frames per chunk sent to the renderer (Triton's max batch).
CHUNK = 16


class Engine(Protocol):
    """The model calls a render makes (`TritonClient` has them)."""

    async def encode_audio(self, samples: np.ndarray) -> np.ndarray: ...
    async def mouth_points(self, replica: Path, features: np.ndarray) -> np.ndarray: ...
    async def render_faces(self, replica: Path, inputs: np.ndarray) -> np.ndarray: ...


class FrameSink(Protocol):
    """Where rendered frames go, in order: an MP4 file (`mp4.Mp4Sink`), a live video track."""

    def write(self, frame: np.ndarray) -> None:
        """One uint8 [H, W, 3] RGB frame, the next in order."""

    def close(self) -> None:
        """Every frame written: finish (the file is complete once this returns)."""

    def abort(self) -> None:
        """The render failed or was cancelled: nothing half-written stays."""


class Painter(Protocol):
    """How each frame's mouth region is painted. The pipeline calls `inputs` while preparing a
    chunk (a thread), `faces` when `inputs` gave an array (the model), and `paste` for each
    frame while compositing (a thread; `frame` is changed in place).
    """

    #: Places a mouth shaped by the audio (the replica's mouth model): the plan has targets.
    shaped: bool
    #: Takes textures from the replica's reference bank.
    banked: bool

    def references(
        self, aligned: np.ndarray | None, bank: Bank | None, features: np.ndarray
    ) -> np.ndarray | None:
        """The bank frame each output frame takes its texture from, for the whole sequence."""
        ...

    def inputs(self, plan: Plan, crops: list[np.ndarray], bank: Bank | None) -> np.ndarray | None:
        """The model's inputs for one chunk's region crops; None: nothing to infer."""
        ...

    async def faces(self, engine: Engine, replica: Path, inputs: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] painted region crops."""
        ...

    def paste(
        self,
        comp: composite.Compositor,
        frame: np.ndarray,
        i: int,
        plan: Plan,
        crops: list[np.ndarray],
        faces: np.ndarray | None,
        bank: Bank | None,
    ) -> None:
        """Paint the chunk's frame `i` in place (`crops[i]` its region crop, `faces` what
        `faces` gave for the chunk).
        """
        ...


class NeuralPainter:
    """The engine: the reference crop with the nearest mouth shape, warped onto the target
    points, through the replica's renderer (`talking_head`), pasted inside the paint mask.
    """

    shaped = True
    banked = True

    def references(
        self, aligned: np.ndarray | None, bank: Bank | None, features: np.ndarray
    ) -> np.ndarray | None:
        # References are chosen on the predicted shape itself.
        assert aligned is not None and bank is not None
        return regions.choose_references(aligned, bank.aligned, bank.frames)

    def inputs(self, plan: Plan, crops: list[np.ndarray], bank: Bank | None) -> np.ndarray | None:
        assert bank is not None and plan.targets is not None and plan.references is not None
        return np.stack(
            [
                regions.make_input(
                    c,
                    plan.targets[i],
                    bank.crops[plan.references[i]],
                    bank.points[plan.references[i]],
                    regions.frame_mask(plan.bases[i]),
                )
                for i, c in enumerate(crops)
            ]
        )

    async def faces(self, engine: Engine, replica: Path, inputs: np.ndarray) -> np.ndarray:
        return (await engine.render_faces(replica, inputs)).transpose(0, 2, 3, 1)

    def paste(
        self,
        comp: composite.Compositor,
        frame: np.ndarray,
        i: int,
        plan: Plan,
        crops: list[np.ndarray],
        faces: np.ndarray | None,
        bank: Bank | None,
    ) -> None:
        assert faces is not None and plan.targets is not None
        target = plan.targets[i]
        hidden = regions.frame_mask(plan.bases[i])
        painted = regions.paint_mask(target, plan.bases[i], hidden)
        lips = regions.lips_mask(target)
        comp.paste(frame, faces[i], crops[i], plan.regions[i], painted, lips)


def _frames(base: Base) -> Iterator[np.ndarray]:
    """Base frames in schedule order: streamed when the schedule only moves forward, else
    from a decoded copy of the frames it uses (a memory-mapped file, not RAM).
    """
    sched = base.schedule
    if np.all(np.diff(sched) == 1):
        sent, last = 0, None
        for _, frame in zip(range(len(sched)), base.read(int(sched[0])), strict=False):
            sent, last = sent + 1, frame
            yield frame
        # A video whose header promised more frames than it has (tracked while it renders,
        # chosen on that promise): its last frame holds, as its landmarks do (`plan.LiveTrack`).
        if last is not None:
            for _ in range(len(sched) - sent):
                yield last
        return
    lo, hi = int(sched.min()), int(sched.max()) + 1
    with tempfile.NamedTemporaryFile(prefix="doppel-frames-") as f:
        frames = np.lib.format.open_memmap(
            f.name, "w+", np.uint8, (hi - lo, base.height, base.width, 3)
        )
        for i, frame in enumerate(base.read(lo)):
            if i >= hi - lo:
                break
            frames[i] = frame
        for t in sched:
            yield np.array(frames[t - lo])


async def render_frames(
    replica: Path,
    base: Base,
    plans: Planner,
    bank: Bank | None,
    sink: FrameSink,
    *,
    engine: Engine,
    painter: Painter,
    watermark: bool,
    progress: Report,
) -> dict[str, float]:
    """Render every frame of `base` into `sink` and close it (abort it on any failure or
    cancellation); returns the stages' busy seconds. `replica` is the replica's folder (its
    renderer); `progress` gets `Progress("frames", done, total)` after each chunk.
    """
    comp = composite.Compositor()
    mark = composite.Mark(base.width, base.height) if watermark else None
    frames = _frames(base)
    total = len(base.schedule)
    spent = {"prepare_s": 0.0, "infer_s": 0.0, "composite_s": 0.0}

    def prepare(k: int) -> tuple[Plan, list[np.ndarray], list[np.ndarray], np.ndarray | None]:
        end = min(total, k + CHUNK)
        plan = plans.rows(k, end)  # waits, for a video tracked while it renders
        t0 = time.perf_counter()
        batch = [next(frames) for _ in range(k, end)]
        crops = [
            tracking.crop_face(f, plan.regions[i], regions.SIZE, sharp=True)
            for i, f in enumerate(batch)
        ]
        inputs = painter.inputs(plan, crops, bank)
        spent["prepare_s"] += time.perf_counter() - t0
        return plan, batch, crops, inputs

    def finish(
        plan: Plan, batch: list[np.ndarray], crops: list[np.ndarray], faces: np.ndarray | None
    ) -> None:
        t0 = time.perf_counter()
        for i, frame in enumerate(batch):
            frame = frame.copy()
            painter.paste(comp, frame, i, plan, crops, faces, bank)
            if mark is not None:
                mark.apply(frame)
            sink.write(frame)
        spent["composite_s"] += time.perf_counter() - t0

    # Three stages overlap: preparing chunk k+1 (a thread), rendering chunk k (Triton), and
    # compositing/encoding chunk k-1 (a thread; chunks stay in order, one at a time).
    finishing: asyncio.Task[None] | None = None
    pending: asyncio.Task[Any] | None = None
    try:
        pending = asyncio.create_task(asyncio.to_thread(prepare, 0))
        for k in range(0, total, CHUNK):
            assert pending is not None
            plan, batch, crops, inputs = await pending
            pending = None
            if k + CHUNK < total:
                pending = asyncio.create_task(asyncio.to_thread(prepare, k + CHUNK))
            faces = None
            if inputs is not None:
                t0 = time.perf_counter()
                faces = await painter.faces(engine, replica, inputs)
                spent["infer_s"] += time.perf_counter() - t0
            if finishing is not None:
                await finishing
            finishing = asyncio.create_task(asyncio.to_thread(finish, plan, batch, crops, faces))
            progress(Progress("frames", min(total, k + CHUNK), total))
        if finishing is not None:
            await finishing
        # A video tracked while it rendered: its face check (most frames have one) comes with
        # the end of tracking, before the file is written.
        await asyncio.to_thread(plans.finish)
        await asyncio.to_thread(sink.close)
    except BaseException:
        for task in (pending, finishing):
            if task is not None and not task.done():
                task.cancel()
        sink.abort()
        raise
    return {k: round(v, 3) for k, v in spent.items()}
