"""quality.md's face and lip metrics, measured on output video FILES only.

Everything is taken from the file's pixels and samples: MediaPipe's face mesh is run again on the
decoded frames (video mode, every frame, 25 fps), the audio is decoded again, and identity uses
dlib's 128-d face descriptor (face-recognition-models' ResNet) on frames sampled from the file.
Nothing the generator reported about itself is read.

    from benchmarks.quality import video_metrics as vm
    real, gen = vm.analyse(real_path), vm.analyse(generated_path)
    vm.mouth_sync(gen, real)  # {"mouth_corr", "offset_ms", "motion"}
    vm.env_corr(gen), vm.identity(gen, [real]), vm.sharpness(gen, real), vm.face_rate(gen)
    vm.contact_sheet([("real", real), ("replica", gen)], Path("sheet.png"))

Conventions (see quality.md for the figures real data gives):
- mouth opening: inner-lip distance (mesh 13-14) over the eye-corner distance (33-263);
- offset_ms: positive when the generated mouth trails the real one;
- env_corr: the best correlation with the mouth trailing the audio RMS envelope by 0-5 frames
  (0-200 ms at 25 fps); taking the best of six lags lifts pure noise a little, which is why
  quality.md says to read it only where motion is near 1 (see env_corr for where real clips
  peak);
- a still signal correlates with nothing: correlations are NaN then, never 0.

Run OMP_NUM_THREADS=1 on shared machines: MediaPipe and dlib spread over every core otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import math
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.quality.mouth import lagged, pearson
from doppel.face import tracking
from doppel.face.video import ENGINE_FPS, probe, read_frames

T = TypeVar("T")

FPS = ENGINE_FPS  # every metric is per 40 ms frame
#: offset_ms is searched within +-400 ms (quality.md).
MAX_LAG = 10
#: env_corr: the mouth may trail the sound by 0-200 ms (0..5 frames at 25 fps, quality.md).
ENV_LAGS = range(0, 6)
#: Frames taller than this are scaled down for tracking only (landmarks are mapped back to the
#: native pixels); 720p and smaller are tracked as they are.
TRACK_HEIGHT = 720
#: Mouth crops: a square around the lips, this share of the FFHQ-aligned face box's side (that
#: box is ~4 eye distances wide, so the crop holds the lips, the chin's top and the nose tip),
#: sampled from the NATIVE frame and stored at MOUTH_SIZE pixels.
MOUTH_SHARE = 0.45
MOUTH_SIZE = 128
#: Frames sampled (evenly among those with a face) for the identity descriptor.
IDENTITY_FRAMES = 10
#: Area kept around the face for dlib: the landmark box grown by this share on every side.
FACE_MARGIN = 0.5
#: Audio envelope sample rate (the rate `decode_audio` gives).
AUDIO_RATE = 16_000


@dataclasses.dataclass
class VideoAnalysis:
    """What one video file gives the metrics; arrays are per frame at 25 fps."""

    path: Path
    fps: float
    frames: int
    width: int
    height: int
    landmarks: np.ndarray  # [T, 478, 2] float32, native pixels (interpolated where not found)
    found: np.ndarray  # [T] bool
    opening: np.ndarray  # [T] float32, inner-lip opening over eye-corner distance
    envelope: np.ndarray  # [T] float32, audio RMS per 40 ms frame (zeros without audio)
    has_audio: bool
    mouth_crops: np.ndarray  # [T, MOUTH_SIZE, MOUTH_SIZE, 3] uint8 RGB (black where no face)
    #: Frame indices of the identity samples, their face areas (RGB, native scale) and the
    #: face box (left, top, right, bottom) in each area's pixels.
    id_indices: np.ndarray  # [K] int
    id_images: list[np.ndarray]
    id_boxes: list[tuple[int, int, int, int]]
    _descriptors: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def descriptors(self) -> np.ndarray:
        """dlib 128-d face descriptors of the identity samples [K, 128] (computed once)."""
        if self._descriptors is None:
            self._descriptors = _Dlib.get().describe(self.id_images, self.id_boxes)
        return self._descriptors


def analyse(path: Path, *, max_frames: int | None = None) -> VideoAnalysis:
    """Track every frame of `path` at 25 fps (MediaPipe video mode), decode its audio, and cut
    the mouth crops and identity samples from the native frames.
    """
    import cv2

    path = Path(path)
    info = probe(path)
    scale = min(1.0, TRACK_HEIGHT / info.height) if info.height else 1.0
    size = None
    if scale < 1.0:
        size = (2 * round(info.width * scale / 2), 2 * round(info.height * scale / 2))
    with tracking.FaceTracker(video=True) as tracker:
        # Face detection is not needed (only the mesh is): run it on the first frame only.
        track = tracker.track(
            _take(read_frames(path, size=size, fps=FPS), max_frames), detect_every=1 << 30
        )
    count = track.frame_count
    landmarks = track.landmarks
    if size is not None:
        landmarks = landmarks * np.array([info.width / size[0], info.height / size[1]], np.float32)
    found = track.found
    opening = tracking.mouth_opening(landmarks) if count else np.zeros(0, np.float32)

    mouth_boxes = _mouth_boxes(landmarks) if found.any() else None
    chosen = _identity_indices(found)
    crops = np.zeros((count, MOUTH_SIZE, MOUTH_SIZE, 3), np.uint8)
    id_images: list[np.ndarray] = []
    id_boxes: list[tuple[int, int, int, int]] = []
    if mouth_boxes is not None:
        wanted = set(chosen.tolist())
        for i, frame in enumerate(_take(read_frames(path, fps=FPS), count)):
            crops[i] = cv2.warpAffine(
                frame,
                tracking.crop_matrix(mouth_boxes[i], MOUTH_SIZE),
                (MOUTH_SIZE, MOUTH_SIZE),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            if i in wanted:
                image, box = _face_area(frame, landmarks[i])
                id_images.append(image)
                id_boxes.append(box)
    return VideoAnalysis(
        path=path,
        fps=float(FPS),
        frames=count,
        width=info.width,
        height=info.height,
        landmarks=landmarks,
        found=found,
        opening=opening,
        envelope=_envelope(path, count) if info.has_audio else np.zeros(count, np.float32),
        has_audio=info.has_audio,
        mouth_crops=crops,
        id_indices=chosen,
        id_images=id_images,
        id_boxes=id_boxes,
    )


def mouth_sync(gen: VideoAnalysis, real: VideoAnalysis) -> dict[str, float]:
    """mouth_corr (zero lag, common length), offset_ms (best lag within +-400 ms; positive:
    generated trails real) and motion (std of the generated opening over the real one's, each
    over its whole clip, so the real clip may be another take of the person).
    """
    n = min(gen.frames, real.frames)
    g, r = gen.opening[:n].astype(np.float64), real.opening[:n].astype(np.float64)
    corrs = {lag: lagged(g, r, lag) for lag in range(-MAX_LAG, MAX_LAG + 1) if abs(lag) < n - 2}
    finite = {k: v for k, v in corrs.items() if np.isfinite(v)}
    offset = max(finite, key=lambda k: finite[k]) * 1000 / FPS if finite else math.nan
    real_std = float(real.opening.std()) if real.frames else 0.0
    motion = float(gen.opening.std()) / real_std if real_std > 1e-9 else math.nan
    return {
        "mouth_corr": pearson(g, r) if n > 2 else math.nan,
        "offset_ms": offset,
        "motion": motion,
    }


def env_corr(a: VideoAnalysis, *, lags: Iterable[int] = ENV_LAGS) -> float:
    """Correlation of the mouth opening with the audio RMS envelope: the best over the mouth
    trailing the sound by `lags` frames, 0..5 (0-200 ms) by default as quality.md allows.

    The best of a window rather than one fixed lag because the delay between loudness and
    visible opening varies with speaker and recording. Caveat measured on the 8 real Obama clips
    with audio: in 7 of them the nearest correlation peak has the mouth 1-3 frames AHEAD of the
    loudness (the lips open before the voiced sound, or the files' audio is late), so within
    0..5 they score 0.02-0.41 (08: 0.25) where lags -3..5 would give 0.18-0.64 (08: 0.46).
    Pass `lags` to study that; compare scores only within one window. NaN without audio or
    without motion.
    """
    o, e = a.opening.astype(np.float64), a.envelope.astype(np.float64)
    values = [lagged(o, e, lag) for lag in lags if abs(lag) < a.frames - 2]
    finite = [v for v in values if np.isfinite(v)]
    return max(finite) if finite else math.nan


def identity(gen: VideoAnalysis, real: Sequence[VideoAnalysis] | VideoAnalysis) -> float:
    """Mean dlib descriptor distance over all (generated sample, real sample) pairs.

    Same person 0.16-0.27, different people ~0.8; dlib's same-person threshold is 0.6. NaN when
    either side has no face.
    """
    reals = [real] if isinstance(real, VideoAnalysis) else list(real)
    g = gen.descriptors()
    r = np.concatenate([x.descriptors() for x in reals]) if reals else np.zeros((0, 128))
    if len(g) == 0 or len(r) == 0:
        return math.nan
    return float(np.linalg.norm(g[:, None] - r[None], axis=-1).mean())


def sharpness(gen: VideoAnalysis, real: VideoAnalysis) -> float:
    """Median Laplacian variance of the grey mouth crops (frames with a face), gen over real."""
    g, r = _laplacian_median(gen), _laplacian_median(real)
    return g / r if r > 0 and np.isfinite(g) else math.nan


def face_rate(a: VideoAnalysis) -> float:
    """Share of frames in which the mesh found a face (NaN for a video with no frames)."""
    return float(a.found.mean()) if a.frames else math.nan


def contact_sheet(
    rows: list[tuple[str, VideoAnalysis]],
    out: Path,
    *,
    frames: int = 8,
    cell: int = 160,
    label_width: int = 170,
) -> Path:
    """A PNG grid of mouth crops: one row per labelled video, the same evenly spaced frame
    indices in every row (over the shortest video), frame numbers on top, labels on the left.
    """
    import cv2

    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    length = min(a.frames for _, a in rows)
    indices = (
        np.unique(np.linspace(0, length - 1, max(1, frames)).round().astype(int))
        if length
        else np.zeros(0, int)
    )
    header = 28
    font = cv2.FONT_HERSHEY_SIMPLEX
    sheet = np.full(
        (header + cell * len(rows), label_width + cell * max(1, len(indices)), 3), 255, np.uint8
    )
    for j, index in enumerate(indices):
        x = label_width + j * cell
        cv2.putText(sheet, f"frame {index}", (x + 6, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (label, a) in enumerate(rows):
        y = header + i * cell
        for j, index in enumerate(indices):
            tile = cv2.resize(a.mouth_crops[index], (cell, cell), interpolation=cv2.INTER_CUBIC)
            if not a.found[index]:
                cv2.putText(tile, "no face", (8, cell // 2), font, 0.5, (255, 0, 0), 1)
            x = label_width + j * cell
            sheet[y : y + cell, x : x + cell] = tile
        cv2.putText(sheet, label[:16], (8, y + cell // 2 + 6), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out}")
    return out


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table of `rows` (missing keys left blank; floats to 3 decimals)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "nan" if not np.isfinite(value) else f"{float(value):.3f}"
    return str(value).replace("|", "\\|")


def _take(frames: Iterable[np.ndarray], limit: int | None) -> Iterable[np.ndarray]:
    for i, frame in enumerate(frames):
        if limit is not None and i >= limit:
            return
        yield frame


def _mouth_boxes(landmarks: np.ndarray) -> np.ndarray:
    """[T, 4] (centre x, centre y, side, angle) squares around the mouth, fixed to the smoothed
    FFHQ-aligned face box: the mouth's place in that box is the clip's median, so the crop
    follows the head but not the jaw (an opening mouth moves inside a still crop).
    """
    faces = tracking.crop_boxes(landmarks)
    mouth = landmarks[:, [tracking.MOUTH_LEFT, tracking.MOUTH_RIGHT]].mean(axis=1)
    cos, sin = np.cos(faces[:, 3]), np.sin(faces[:, 3])
    rel = mouth - faces[:, :2]
    # The mouth centre in the box's own axes, as a share of its side.
    u = (rel[:, 0] * cos + rel[:, 1] * sin) / faces[:, 2]
    v = (-rel[:, 0] * sin + rel[:, 1] * cos) / faces[:, 2]
    du, dv = float(np.median(u)) * faces[:, 2], float(np.median(v)) * faces[:, 2]
    centre = faces[:, :2] + np.stack([du * cos - dv * sin, du * sin + dv * cos], axis=1)
    return np.column_stack([centre, faces[:, 2] * MOUTH_SHARE, faces[:, 3]]).astype(np.float32)


def _identity_indices(found: np.ndarray) -> np.ndarray:
    have = np.flatnonzero(found)
    if len(have) <= IDENTITY_FRAMES:
        return have
    return have[np.linspace(0, len(have) - 1, IDENTITY_FRAMES).round().astype(int)]


def _face_area(
    frame: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The frame around the face (landmark box grown by FACE_MARGIN) and the box for dlib in it.

    dlib's 5-point shape predictor was trained on its own HOG detector's boxes: a square about
    1.1 face widths wide, a little above the mesh's centre (the mesh reaches the forehead). This
    box matched the HOG detector's on Obama and GRID frames to a few pixels and gave the same
    distances (0.31 vs 0.31 Obama clip to clip, 0.70 vs 0.70 GRID s1 to Obama); the mesh's own
    box with the forehead cut gave 0.40 on the same Obama pair.
    """
    h, w = frame.shape[:2]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.03 * (y1 - y0)
    half = 0.55 * (x1 - x0)
    mx, my = FACE_MARGIN * (x1 - x0), FACE_MARGIN * (y1 - y0)
    left, upper = max(0, int(x0 - mx)), max(0, int(y0 - my))
    right, lower = min(w, math.ceil(x1 + mx)), min(h, math.ceil(y1 + my))
    image = np.ascontiguousarray(frame[upper:lower, left:right])
    box = (
        round(cx - half) - left,
        round(cy - half) - upper,
        round(cx + half) - left,
        round(cy + half) - upper,
    )
    return image, box


def _laplacian_median(a: VideoAnalysis) -> float:
    import cv2

    values = [
        float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
        for crop, ok in zip(a.mouth_crops, a.found, strict=True)
        if ok
    ]
    return float(np.median(values)) if values else math.nan


def _envelope(path: Path, frames: int) -> np.ndarray:
    """Audio RMS per 40 ms frame: frame i covers [i, i+1) x 40 ms of the audio track (zeros
    past its end).
    """
    from doppel.audio.media import decode_audio
    from doppel.errors import InvalidMedia

    try:
        samples = _run_async(decode_audio(path, AUDIO_RATE)).samples
    except InvalidMedia:
        return np.zeros(frames, np.float32)
    hop = AUDIO_RATE // FPS
    padded = np.zeros(frames * hop, np.float64)
    used = samples[: len(padded)]
    padded[: len(used)] = used
    return np.sqrt(np.mean(np.square(padded.reshape(frames, hop)), axis=1)).astype(np.float32)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _Dlib:
    """dlib's 5-point shape predictor and face-recognition ResNet, loaded once."""

    _instance: _Dlib | None = None

    def __init__(self) -> None:
        import dlib

        models = _face_models_dir()
        self.dlib = dlib
        self.shapes = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )

    @classmethod
    def get(cls) -> _Dlib:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def describe(
        self, images: list[np.ndarray], boxes: list[tuple[int, int, int, int]]
    ) -> np.ndarray:
        out = np.zeros((len(images), 128), np.float64)
        for k, (image, (left, top, right, bottom)) in enumerate(zip(images, boxes, strict=True)):
            rect = self.dlib.rectangle(left, top, right, bottom)
            shape = self.shapes(image, rect)
            out[k] = np.asarray(self.net.compute_face_descriptor(image, shape))
        return out


def _face_models_dir() -> Path:
    """The `models` folder of the face_recognition_models package, found without importing it:
    its __init__ imports pkg_resources (deprecated, warns at import, and gone from setuptools
    81), only to return these same paths.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "face_recognition_models is not installed (requirements.lock pins "
            "face_recognition_models==0.3.0 and dlib-bin)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"
