"""Rendering a replica: audio in, lip-synced talking-head MP4 out.

Two modes, one engine:
* replica mode: the base frames are the replica's own training video, its talking stretch
  played forward then backward (no jump at the turn), for as long as the audio lasts;
* dubbing mode (`base_video`): the base frames are an existing video of the person, re-mouthed
  for the new audio (Tavus's lip-sync product).

Per frame: audio features (`audio_encoder`) -> mouth shape (the replica's `mouth_motion`) ->
target landmarks on the base frame -> a reference crop of the person with the nearest shape,
warped to the target -> the replica's renderer (`talking_head`) -> composited into the frame,
marked AI-generated, and encoded to H.264 + AAC at 25 fps with the audio.

`engine` is anything with the three async methods of `TritonClient` used here
(`encode_audio`, `mouth_points`, `render_faces`); `LocalEngine` runs the same graphs
in-process for scripts and tests that have no platform.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from doppel.audio import media
from doppel.errors import InvalidMedia, InvalidRequest
from doppel.face import composite, mouth, regions, tracking, video
from doppel.replica.artefact import Bank, Replica

#: Longest audio one render takes (a demanding user's 10-minute video).
MAX_AUDIO_S = 600.0
#: Frames per chunk sent to the renderer (Triton's max batch).
CHUNK = 16
#: neural: the engine; static and retrieval: the baselines of the evaluation (issue 4); warp: the
#: warped, colour-matched reference alone, without the network (an ablation).
METHODS = ("neural", "static", "retrieval", "warp")


class Engine(Protocol):
    async def encode_audio(self, samples: np.ndarray) -> np.ndarray: ...
    async def mouth_points(self, replica: Path, features: np.ndarray) -> np.ndarray: ...
    async def render_faces(self, replica: Path, inputs: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass
class RenderResult:
    path: Path
    frames: int
    duration_s: float
    seconds: float
    timings: dict[str, float]

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


@dataclasses.dataclass
class Base:
    """Where each output frame comes from: a frame schedule into a video, with its tracking."""

    path: Path
    schedule: np.ndarray  # [T] frame index in `path` (25 fps)
    landmarks: np.ndarray  # [T, 478, 2]
    boxes: np.ndarray  # [T, 4] face crop boxes
    width: int
    height: int
    #: How `path` is read (`video.read_frames`): resampled to the engine's rate and scaled to
    #: (width, height) on the way, for a dubbing video used as it was uploaded.
    resample: bool = False
    #: A dubbing video tracked while it renders (`_LiveTrack`): `landmarks` and `boxes` are
    #: then empty, and the plan is made a window at a time (`_Planner`).
    live: _LiveTrack | None = None

    def read(self, start: int = 0) -> Generator[np.ndarray, None, None]:
        """The frames of `path` from frame `start`, as the schedule counts them."""
        if self.resample:
            return video.read_frames(
                self.path, fps=video.ENGINE_FPS, size=(self.width, self.height), start=start
            )
        return video.read_frames(self.path, start=start)


def pingpong(start: int, end: int, count: int) -> np.ndarray:
    """`count` frame indices walking start..end-1 forward, then back, and so on."""
    n = max(1, end - start)
    if n == 1:
        return np.full(count, start, np.int64)
    period = 2 * (n - 1)
    k = np.arange(count) % period
    return start + np.where(k < n, k, period - k)


async def render(
    replica: Replica,
    audio_path: Path,
    out: Path,
    *,
    engine: Engine,
    base_video: Path | None = None,
    watermark: bool = True,
    method: str = "neural",
    progress: Callable[[str], None] | None = None,
) -> RenderResult:
    """Render `replica` speaking `audio_path` into `out` (MP4)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    say = progress or (lambda _: None)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    clock = start

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    audio = await media.decode_audio(audio_path)
    if audio.duration_s < 0.2:
        raise InvalidMedia("The audio is shorter than 0.2 s: there is nothing to lip-sync.")
    if audio.duration_s > MAX_AUDIO_S:
        raise InvalidRequest(
            f"The audio lasts {audio.duration_s:.0f} s; one video takes at most "
            f"{MAX_AUDIO_S:.0f} s. Split the script into several videos."
        )
    count = math.ceil(audio.duration_s * video.ENGINE_FPS)
    silent = silent_frames(audio.samples, audio.rate, count)
    shaped = method in ("neural", "warp")

    async def speech() -> tuple[np.ndarray, np.ndarray | None]:
        # Triton's models, while this process tracks the dubbing video or loads the bank.
        features = _fit(await engine.encode_audio(audio.samples), count)
        aligned = await engine.mouth_points(replica.folder, features) if shaped else None
        return features, aligned

    def frames_side() -> tuple[Base, Bank | None]:
        bank = replica.bank() if method != "static" else None
        return _base(replica, base_video, count, silent), bank

    (features, aligned), (base, bank) = await asyncio.gather(
        speech(), asyncio.to_thread(frames_side)
    )
    lap("inputs_s")
    try:
        plans = _Planner(base, aligned, bank, features, method, anchored=base_video is not None)
        lap("plan_s")
        say(f"rendering {count} frames ({audio.duration_s:.1f} s) with {method}")
        await _render_frames(
            replica, base, plans, bank, audio_path, out, engine, watermark, method, say, timings
        )
    finally:
        if base.live is not None:
            await asyncio.to_thread(base.live.close)
    lap("frames_s")
    return RenderResult(out, count, audio.duration_s, time.perf_counter() - start, timings)


def _fit(features: np.ndarray, count: int) -> np.ndarray:
    if len(features) >= count:
        return features[:count]
    return np.concatenate([features, np.repeat(features[-1:], count - len(features), 0)])


def silent_frames(
    samples: np.ndarray, rate: int, count: int, *, floor_db: float = -45.0, min_s: float = 1.0
) -> np.ndarray:
    """[count] bool: video frames inside a stretch of at least `min_s` with the audio below
    `floor_db` dBFS (RMS per frame): where replica mode shows the listening face.
    """
    hop = rate // video.ENGINE_FPS
    padded = np.pad(samples.astype(np.float32), (0, max(0, count * hop - len(samples))))
    rms = np.sqrt(np.mean(padded[: count * hop].reshape(count, hop) ** 2, axis=1) + 1e-12)
    quiet = 20 * np.log10(rms) < floor_db
    out = np.zeros(count, bool)
    run = round(min_s * video.ENGINE_FPS)
    start = None
    for t in range(count + 1):
        on = t < count and quiet[t]
        if on and start is None:
            start = t
        if not on and start is not None:
            if t - start >= run:
                out[start:t] = True
            start = None
    return out


def replica_schedule(
    talk: tuple[int, int],
    idle: tuple[int, int] | None,
    silent: np.ndarray,
    boxes: np.ndarray,
) -> np.ndarray:
    """Base frame per output frame in replica mode: the talking stretch played forward and
    backward; long silences on the listening stretch (when the replica has one). At each switch
    the new stretch is entered at the frame whose face crop is nearest the current one (head
    position and size), so the cut is as small as the training video allows.
    """
    count = len(silent)
    if idle is None or not silent.any():
        return pingpong(*talk, count)
    out = np.empty(count, np.int64)
    t, current = 0, talk[0]
    while t < count:
        quiet = bool(silent[t])
        end = t
        while end < count and bool(silent[end]) == quiet:
            end += 1
        a, b = idle if quiet else talk
        if t == 0:
            entry = a
        else:
            d = np.linalg.norm(boxes[a:b, :3] - boxes[current, :3], axis=1)
            entry = a + int(np.argmin(d))
        # Ping-pong over [a, b) starting at `entry`, walking forward first.
        n = max(1, b - a)
        period = max(1, 2 * (n - 1))
        k = (np.arange(end - t) + (entry - a)) % period
        out[t:end] = a + np.where(k < n, k, period - k) if n > 1 else a
        current = int(out[end - 1])
        t = end
    return out


def _base(
    replica: Replica,
    base_video: Path | None,
    count: int,
    silent: np.ndarray,
    *,
    stream: bool | None = None,
) -> Base:
    """Where the `count` output frames come from. `stream` (dubbing): track the video while
    rendering (`_LiveTrack`); None: when it is longer than the audio.
    """
    if base_video is None:
        prepared = replica.prepared
        boxes = replica.crop_boxes(prepared)
        schedule = replica_schedule(replica.base_range, replica.idle_range, silent, boxes)
        return Base(
            prepared.video_path,
            schedule,
            prepared.landmarks[schedule],
            boxes[schedule],
            prepared.width,
            prepared.height,
        )
    # Read as uploaded, resampled to the engine's rate and size in the decoder (no re-encoded
    # copy): once to track it, once to render.
    info = video.probe(base_video)
    width, height = video.engine_size(info, video.MAX_HEIGHT)
    source = Base(base_video, np.zeros(0, np.int64), np.zeros(0), np.zeros(0), width, height, True)
    if stream is None:
        # As long as the audio: tracked while it renders. Shorter ones are played forward and
        # backward, which needs the whole track first.
        stream = info.duration_s * video.ENGINE_FPS >= count - STREAM_SLACK
    if stream:
        return dataclasses.replace(
            source, schedule=np.arange(count), live=_LiveTrack(source, info.path.name)
        )
    with tracking.FaceTracker(video=True) as tracker:
        # The mesh alone (4 ms a 720p frame): face detection on every frame would add 9 ms,
        # and dubbing counts no faces (the mesh finds the face again when it loses it).
        track = tracker.track(source.read(), detect_every=1 << 30)
    if track.frame_count == 0 or track.found.mean() < 0.5:
        raise InvalidMedia(
            f"No face was found in most of {info.path.name}: dubbing needs a video "
            "of the replica's person facing the camera."
        )
    if track.frame_count >= count:
        # The first `count` frames, smoothed as a streamed plan smooths them (`_Planner`).
        schedule = np.arange(count)
        boxes = tracking.crop_boxes(track.landmarks[:count])
    else:
        schedule = pingpong(0, track.frame_count, count)
        boxes = tracking.crop_boxes(track.landmarks)[schedule]
    return dataclasses.replace(
        source, schedule=schedule, landmarks=track.landmarks[schedule], boxes=boxes
    )


@dataclasses.dataclass
class Plan:
    regions: np.ndarray  # [T, 4] region boxes
    targets: np.ndarray | None  # [T, P, 2] target warp points in region coordinates
    bases: np.ndarray  # [T, 53, 2] the base frames' own mouth points in region coordinates
    references: np.ndarray | None  # [T] bank index

    def rows(self, a: int, b: int) -> Plan:
        """Frames [a, b) of the plan."""
        return Plan(
            self.regions[a:b],
            None if self.targets is None else self.targets[a:b],
            self.bases[a:b],
            None if self.references is None else self.references[a:b],
        )


def _reach(sigma: float) -> int:
    """Frames either side a Gaussian smoothing reads (scipy's kernel: four sigmas)."""
    return int(4.0 * sigma + 0.5)


#: Frames a plan row depends on either side: the crop boxes' smoothing
#: (`tracking.crop_boxes`), and the mouth's anchor (`mouth.anchor`) smoothing an offset
#: measured in the smoothed face frame (`mouth.face_frames`).
PLAN_RADIUS = 1 + max(
    _reach(max(tracking.CENTER_SIGMA, tracking.ANGLE_SIGMA, tracking.SIZE_SIGMA)),
    _reach(mouth.ALIGN_SIGMA) + _reach(mouth.ANCHOR_SIGMA),
)
#: Frames a dubbing video may have fewer than the audio (by its header) and still be tracked
#: while it renders: rounding between the two streams' durations; a frame missing at the end
#: holds the last one, as playing forward and backward would.
STREAM_SLACK = 2


class _LiveTrack:
    """A dubbing video's face mesh, tracked in a thread while the frames render.

    Rows of `window` are final (a frame without a mesh is interpolated between its found
    neighbours, held before the first and after the last, as `tracking.FaceTracker.track`
    does), so a plan made from them is the one the whole track would give.
    """

    def __init__(self, source: Base, name: str) -> None:
        self.name = name
        self._source = source
        self._raw: list[np.ndarray | None] = []
        self._filled: list[np.ndarray] = []  # final rows [478, 2]
        self._last_found = -1
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dubbing-track", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            frames = self._source.read()
            try:
                with tracking.FaceTracker(video=True) as tracker:
                    for frame in frames:
                        if self._stop.is_set():
                            break
                        mesh = tracker.mesh(frame)
                        self._add(None if mesh is None else mesh[:, :2].copy())
            finally:
                frames.close()
            found = sum(p is not None for p in self._raw)
            if not self._stop.is_set() and found < 0.5 * max(1, len(self._raw)):
                raise InvalidMedia(
                    f"No face was found in most of {self.name}: dubbing needs a video "
                    "of the replica's person facing the camera."
                )
        except BaseException as exc:  # noqa: BLE001 - raised again where the frames are used
            self._error = exc
        finally:
            with self._changed:
                if self._last_found >= 0:
                    last = self._raw[self._last_found]
                    assert last is not None
                    self._filled += [last] * (len(self._raw) - len(self._filled))
                self._done = True
                self._changed.notify_all()

    def _add(self, points: np.ndarray | None) -> None:
        with self._changed:
            j = len(self._raw)
            self._raw.append(points)
            if points is None:
                return
            i = self._last_found
            if i < 0:
                self._filled += [points] * j
            else:
                before = self._raw[i]
                assert before is not None
                for t in range(i + 1, j):
                    self._filled.append(before + (points - before) * np.float32((t - i) / (j - i)))
            self._filled.append(points)
            self._last_found = j
            self._changed.notify_all()

    def window(self, a: int, b: int) -> np.ndarray:
        """Final landmarks [b - a, 478, 2] of frames [a, b), once tracked (the last row held
        beyond the video's end); raises what tracking raised.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._done or len(self._filled) >= b)
            if self._error is not None:
                raise self._error
            rows = self._filled[a:b]
            if len(rows) < b - a:
                rows += [self._filled[-1]] * (b - a - len(rows))
        return np.stack(rows).astype(np.float32)

    def finish(self) -> None:
        """Wait for the end of tracking; raises what it raised (no face in most frames)."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Planner:
    """Plan rows for the frames as they render: the whole plan at once, or for a video tracked
    while it renders, each chunk's rows from a window reaching PLAN_RADIUS frames either side.
    """

    def __init__(
        self,
        base: Base,
        aligned: np.ndarray | None,
        bank: Bank | None,
        features: np.ndarray,
        method: str,
        *,
        anchored: bool,
    ) -> None:
        self.base, self.aligned, self.bank, self.features = base, aligned, bank, features
        self.method, self.anchored = method, anchored
        self.references = _references(aligned, bank, features, method)
        self.whole = (
            None
            if base.live is not None
            else _plan(
                base, aligned, bank, features, method, anchored=anchored, references=self.references
            )
        )

    def rows(self, a: int, b: int) -> Plan:
        if self.whole is not None:
            return self.whole.rows(a, b)
        live = self.base.live
        assert live is not None
        count = len(self.base.schedule)
        w0, w1 = max(0, a - PLAN_RADIUS), min(count, b + PLAN_RADIUS)
        landmarks = live.window(w0, w1)
        window = dataclasses.replace(
            self.base,
            schedule=self.base.schedule[w0:w1],
            landmarks=landmarks,
            boxes=tracking.crop_boxes(landmarks),
            live=None,
        )
        plan = _plan(
            window,
            None if self.aligned is None else self.aligned[w0:w1],
            self.bank,
            self.features[w0:w1],
            self.method,
            anchored=self.anchored,
            references=None if self.references is None else self.references[w0:w1],
        )
        return plan.rows(a - w0, b - w0)

    def finish(self) -> None:
        if self.base.live is not None:
            self.base.live.finish()


def _plan(
    base: Base,
    aligned: np.ndarray | None,
    bank: Bank | None,
    features: np.ndarray,
    method: str,
    *,
    anchored: bool = False,
    references: np.ndarray | None = None,
) -> Plan:
    """Each frame's region, target points, own mouth points and reference. `references`: the
    references already chosen (`_references`: they depend on the whole sequence, so a plan
    made a window at a time takes them from a choice made once).
    """
    boxes = regions.region_boxes(base.boxes)
    own = base.landmarks[:, list(mouth.POINTS)]
    bases = np.stack([regions.to_region(own[t], boxes[t]) for t in range(len(own))])
    if method == "static":
        return Plan(boxes, None, bases, None)
    assert bank is not None
    refs = _references(aligned, bank, features, method) if references is None else references
    if method == "retrieval":
        return Plan(boxes, None, bases, refs)
    assert aligned is not None
    # Dubbing: the base video is any footage of the person, held however; the mouth is drawn
    # where that video's own mouth is (`mouth.anchor`), shaped by the audio. Replica mode's base
    # frames are the training video the mouth model was fitted to (its mouth sits within ~2 px
    # of the prediction there), where anchoring would only bring in the slow part of the base's
    # own lip motion.
    placed = mouth.anchor(aligned, mouth.to_face_frame(base.landmarks)) if anchored else aligned
    mesh = mouth.onto_mesh(placed, base.landmarks)
    targets = np.stack(
        [
            regions.to_region(mesh[t, list(regions.WARP_POINTS)], boxes[t])
            for t in range(len(mesh))
        ]
    )
    return Plan(boxes, targets, bases, refs)


def _references(
    aligned: np.ndarray | None, bank: Bank | None, features: np.ndarray, method: str
) -> np.ndarray | None:
    """The bank frame each output frame takes its texture from (None for `static`)."""
    if method == "static":
        return None
    assert bank is not None
    if method == "retrieval":
        # Baseline: the training frame whose audio features are nearest, pasted as it is.
        f = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-6)
        g = bank.features / (np.linalg.norm(bank.features, axis=1, keepdims=True) + 1e-6)
        return np.argmax(f @ g.T, axis=1)  # type: ignore[no-any-return]
    # References are chosen on the predicted shape itself.
    assert aligned is not None
    return regions.choose_references(aligned, bank.aligned, bank.frames)


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
        # chosen on that promise): its last frame holds, as its landmarks do (`_LiveTrack`).
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


async def _render_frames(
    replica: Replica,
    base: Base,
    plans: _Planner,
    bank: Bank | None,
    audio_path: Path,
    out: Path,
    engine: Engine,
    watermark: bool,
    method: str,
    say: Callable[[str], None],
    timings: dict[str, float],
) -> None:
    comp = composite.Compositor()
    mark = composite.Mark(base.width, base.height) if watermark else None
    frames = _frames(base)
    total = len(base.schedule)
    writer = _Writer(out, base.width, base.height, audio_path)
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
        inputs = None
        if method in ("neural", "warp"):
            assert bank is not None and plan.targets is not None and plan.references is not None
            inputs = np.stack(
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
        spent["prepare_s"] += time.perf_counter() - t0
        return plan, batch, crops, inputs

    def finish(
        plan: Plan, batch: list[np.ndarray], crops: list[np.ndarray], rendered: np.ndarray | None
    ) -> None:
        t0 = time.perf_counter()
        for i, frame in enumerate(batch):
            frame = frame.copy()
            hidden = regions.frame_mask(plan.bases[i])
            if rendered is not None:
                assert plan.targets is not None
                target = plan.targets[i]
                painted = regions.paint_mask(target, plan.bases[i], hidden)
                lips = regions.lips_mask(target)
                comp.paste(frame, rendered[i], crops[i], plan.regions[i], painted, lips)
            elif method == "retrieval":
                assert bank is not None and plan.references is not None
                reference = bank.crops[plan.references[i]]
                comp.paste(frame, reference, crops[i], plan.regions[i], hidden)
            if mark is not None:
                mark.apply(frame)
            writer.write(frame)
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
            rendered = None
            if method == "warp" and inputs is not None:
                rendered = inputs[:, 3:6].transpose(0, 2, 3, 1)
            elif inputs is not None:
                t0 = time.perf_counter()
                rendered = (await engine.render_faces(replica.folder, inputs)).transpose(0, 2, 3, 1)
                spent["infer_s"] += time.perf_counter() - t0
            if finishing is not None:
                await finishing
            finishing = asyncio.create_task(asyncio.to_thread(finish, plan, batch, crops, rendered))
            if k // CHUNK % 10 == 0:
                say(f"frame {min(total, k + CHUNK)}/{total}")
        if finishing is not None:
            await finishing
        # A video tracked while it rendered: its face check (most frames have one) comes with
        # the end of tracking, before the file is written.
        await asyncio.to_thread(plans.finish)
        await asyncio.to_thread(writer.close)
    except BaseException:
        for task in (pending, finishing):
            if task is not None and not task.done():
                task.cancel()
        writer.abort()
        raise
    timings.update({k: round(v, 3) for k, v in spent.items()})


class _Writer:
    """ffmpeg encoder fed RGB frames on stdin, muxing the audio file: H.264 + AAC, 25 fps,
    with the AI-generated disclosure in the container metadata. x264's `superfast` at CRF 18:
    ~7 ms of CPU a 720p frame against ~11 for `veryfast`, for a larger file (~2.5 Mbit/s) of
    the same quality; on 2 cores the encoder shares the CPU with the frame pipeline. Writes to
    a temporary name and renames on success, so a failed render leaves no half-written file.
    """

    def __init__(self, out: Path, width: int, height: int, audio: Path) -> None:
        self.out = out
        self.tmp = out.with_name(f".{out.stem}.partial.mp4")
        args = [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-r",
            str(video.ENGINE_FPS),
            "-i",
            "pipe:0",
            "-i",
            str(audio),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ar",
            "48000",
            *composite.metadata_args(),
            str(self.tmp),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        if self.proc.wait() != 0:
            self.tmp.unlink(missing_ok=True)
            raise InvalidMedia(f"The video could not be encoded ({err.strip()[-300:]}).")
        shutil.move(self.tmp, self.out)

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # stdin of a killed encoder: nothing left to flush to
                    pass
        self.tmp.unlink(missing_ok=True)


class LocalEngine:
    """The Triton models' graphs in-process (ONNX Runtime): for scripts and tests without a
    platform. Same methods as `TritonClient`.
    """

    def __init__(self, models_dir: Path, threads: int = 1, precision: str = "int8") -> None:
        from doppel.audio.features import local_encoder

        self._encode = local_encoder(models_dir)
        self.threads = threads
        self.precision = precision
        self._sessions: dict[Path, Any] = {}

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        if path not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            self._sessions[path] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[path]

    async def encode_audio(self, samples: np.ndarray) -> np.ndarray:
        return await self._encode(samples)

    async def mouth_points(self, replica: Path, features: np.ndarray) -> np.ndarray:
        s = self._session(replica / "mouth.onnx")
        out = await asyncio.to_thread(s.run, None, {"FEATURES": features[None].astype(np.float32)})
        return out[0][0]  # type: ignore[no-any-return]

    async def render_faces(self, replica: Path, inputs: np.ndarray) -> np.ndarray:
        from doppel.replica.serving import renderer_file

        s = self._session(renderer_file(replica, self.precision))
        out = await asyncio.to_thread(s.run, None, {"INPUT": inputs})
        return out[0]  # type: ignore[no-any-return]
