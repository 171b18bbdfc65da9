"""Where each output frame comes from and how its mouth is placed: the frame schedule (the
replica's talking stretch played forward and backward, its listening stretch in long silences,
or a dubbing video), and the per-frame plan (region, target mouth points, the base's own mouth
points, reference), made whole or a window at a time for a dubbing video tracked while it
renders.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator
from pathlib import Path

import numpy as np

from doppel.errors import InvalidMedia
from doppel.face import mouth, regions, tracking, video
from doppel.replica.artefact import Replica


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
    #: A dubbing video tracked while it renders (`LiveTrack`): `landmarks` and `boxes` are
    #: then empty, and the plan is made a window at a time (`Planner`).
    live: LiveTrack | None = None

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


def make_base(
    replica: Replica,
    base_video: Path | None,
    count: int,
    silent: np.ndarray,
    *,
    stream: bool | None = None,
) -> Base:
    """Where the `count` output frames come from. `stream` (dubbing): track the video while
    rendering (`LiveTrack`); None: when it is longer than the audio.
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
            source, schedule=np.arange(count), live=LiveTrack(source, info.path.name)
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
        # The first `count` frames, smoothed as a streamed plan smooths them (`Planner`).
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


class LiveTrack:
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


class Planner:
    """Plan rows for the frames as they render: the whole plan at once, or for a video tracked
    while it renders, each chunk's rows from a window reaching PLAN_RADIUS frames either side.

    `aligned`: the mouth shapes the audio asks for (None: a painter that places no mouth, the
    plan has no targets); `references`: the bank frame each output frame takes its texture
    from, chosen once for the whole sequence (`Painter.references`), or None.
    """

    def __init__(
        self,
        base: Base,
        aligned: np.ndarray | None,
        references: np.ndarray | None,
        *,
        anchored: bool,
    ) -> None:
        self.base, self.aligned, self.references = base, aligned, references
        self.anchored = anchored
        self.whole = (
            None if base.live is not None else _plan(base, aligned, references, anchored=anchored)
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
            None if self.references is None else self.references[w0:w1],
            anchored=self.anchored,
        )
        return plan.rows(a - w0, b - w0)

    def finish(self) -> None:
        if self.base.live is not None:
            self.base.live.finish()


def _plan(
    base: Base,
    aligned: np.ndarray | None,
    references: np.ndarray | None,
    *,
    anchored: bool = False,
) -> Plan:
    """Each frame's region, target points, own mouth points and reference. `references` are
    chosen before (`Painter.references`): they depend on the whole sequence, so a plan made a
    window at a time takes them from a choice made once.
    """
    boxes = regions.region_boxes(base.boxes)
    own = base.landmarks[:, list(mouth.POINTS)]
    bases = np.stack([regions.to_region(own[t], boxes[t]) for t in range(len(own))])
    if aligned is None:
        return Plan(boxes, None, bases, references)
    # Dubbing: the base video is any footage of the person, held however; the mouth is drawn
    # where that video's own mouth is (`mouth.anchor`), shaped by the audio. Replica mode's base
    # frames are the training video the mouth model was fitted to (its mouth sits within ~2 px
    # of the prediction there), where anchoring would only bring in the slow part of the base's
    # own lip motion.
    placed = mouth.anchor(aligned, mouth.to_face_frame(base.landmarks)) if anchored else aligned
    mesh = mouth.onto_mesh(placed, base.landmarks)
    targets = np.stack(
        [regions.to_region(mesh[t, list(regions.WARP_POINTS)], boxes[t]) for t in range(len(mesh))]
    )
    return Plan(boxes, targets, bases, references)
