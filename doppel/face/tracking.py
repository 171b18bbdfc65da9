"""Face tracking with MediaPipe: faces counted by face detection, 478 mesh points per frame,
a head-yaw estimate, the inner-lip opening, and a stable similarity-aligned crop per frame.

MediaPipe (the legacy `mp.solutions` graphs of mediapipe 0.10.21, see models.md) is imported
only when a tracker is built: probing a file must stay fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import TracebackType

import numpy as np

#: Face mesh with `refine_landmarks=True`: 468 face points + 10 iris points.
MESH_POINTS = 478
# Mesh indices (MediaPipe canonical face model). "Left"/"right" are as seen in the image.
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
EYE_OUTER_LEFT, EYE_INNER_LEFT = 33, 133
EYE_INNER_RIGHT, EYE_OUTER_RIGHT = 362, 263
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
CHEEK_LEFT, CHEEK_RIGHT = 234, 454
#: Detections below this score are not counted as faces (MediaPipe's own default is 0.5; the
#: margin keeps posters and patterned backgrounds from counting as a second person).
FACE_SCORE = 0.6
#: A detection smaller than this share of the frame height is background (a photo on a wall),
#: not a second person taking part in the video.
MIN_COUNTED_FACE = 0.05
#: Face detection runs on frames scaled to at most this height: the full-range model takes
#: 192x192 input anyway, and a smaller frame is cheaper to convert.
DETECT_HEIGHT = 480
# Temporal smoothing of the crop (Gaussian sigma in frames at 25 fps). The centre and angle
# follow head motion within ~0.1 s; the size follows slower, since a face's distance to the
# camera changes slowly and a breathing crop is what a renderer's output shows most.
CENTER_SIGMA = 2.0
ANGLE_SIGMA = 3.0
SIZE_SIGMA = 6.0


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: box in pixels (x, y, width, height) and detector score."""

    box: tuple[float, float, float, float]
    score: float


@dataclasses.dataclass
class Track:
    """Per-frame tracking of one face through a video.

    `landmarks` are in pixels of the tracked frames; frames where the mesh lost the face are
    filled by interpolation from their neighbours and marked False in `found`.
    """

    landmarks: np.ndarray  # [T, 478, 2] float32, pixels
    depth: np.ndarray  # [T, 478] float32, MediaPipe's relative z, in pixels like x
    found: np.ndarray  # [T] bool
    #: Faces counted by face detection on the frames it ran on; -1 where it did not run.
    face_counts: np.ndarray  # [T] int16
    #: Largest detected face's height over the frame height (NaN where detection did not run
    #: or found nothing).
    face_heights: np.ndarray  # [T] float32
    width: int
    height: int
    seconds: float = 0.0  # wall time spent tracking

    @property
    def frame_count(self) -> int:
        return int(len(self.found))

    @property
    def yaw_deg(self) -> np.ndarray:
        return yaw_degrees(self.landmarks, self.depth)

    @property
    def mouth_opening(self) -> np.ndarray:
        return mouth_opening(self.landmarks)


class FaceTracker:
    """MediaPipe face detection (full-range model) and face mesh (refined: 478 points).

    `video=True` runs the mesh in tracking mode: the detector runs only when the face is lost,
    which is both faster and steadier on consecutive frames. Use `video=False` for unrelated
    frames (samples spread over a file).
    """

    def __init__(self, *, video: bool = True, max_faces: int = 1) -> None:
        import mediapipe as mp

        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.5
        )
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in an RGB frame, largest first; boxes in the frame's pixels."""
        h, w = frame.shape[:2]
        small, factor = _downscale(frame, DETECT_HEIGHT)
        result = self._detector.process(small)
        faces = []
        for d in result.detections or []:
            score = float(d.score[0])
            b = d.location_data.relative_bounding_box
            if score < FACE_SCORE or b.height < MIN_COUNTED_FACE:
                continue
            faces.append(Face((b.xmin * w, b.ymin * h, b.width * w, b.height * h), score))
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])

    def mesh(self, frame: np.ndarray) -> np.ndarray | None:
        """478 points [478, 3] (x, y in pixels; z relative depth in the same pixel scale), or
        None when no face is found.
        """
        result = self._mesh.process(frame)
        if not result.multi_face_landmarks:
            return None
        h, w = frame.shape[:2]
        points = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
        out *= np.array([w, h, w], np.float32)
        return out

    def track(self, frames: Iterable[np.ndarray], *, detect_every: int = 1) -> Track:
        """Mesh on every frame; face detection on every `detect_every`-th frame."""
        import time

        start = time.perf_counter()
        points: list[np.ndarray | None] = []
        counts: list[int] = []
        heights: list[float] = []
        width = height = 0
        for i, frame in enumerate(frames):
            height, width = frame.shape[:2]
            points.append(self.mesh(frame))
            if i % detect_every == 0:
                faces = self.detect(frame)
                counts.append(len(faces))
                heights.append(faces[0].box[3] / height if faces else np.nan)
            else:
                counts.append(-1)
                heights.append(np.nan)
        found = np.array([p is not None for p in points], dtype=bool)
        filled = _interpolate(points, found)
        return Track(
            landmarks=np.ascontiguousarray(filled[:, :, :2]),
            depth=np.ascontiguousarray(filled[:, :, 2]),
            found=found,
            face_counts=np.array(counts, dtype=np.int16),
            face_heights=np.array(heights, dtype=np.float32),
            width=width,
            height=height,
            seconds=time.perf_counter() - start,
        )


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening per frame: distance between mesh points 13 and 14 over the eye-corner
    distance (33-263), so it does not change with the face's size in the frame (quality.md).
    """
    lips = np.linalg.norm(landmarks[:, UPPER_INNER_LIP] - landmarks[:, LOWER_INNER_LIP], axis=-1)
    eyes = np.linalg.norm(landmarks[:, EYE_OUTER_LEFT] - landmarks[:, EYE_OUTER_RIGHT], axis=-1)
    return (lips / np.maximum(eyes, 1e-6)).astype(np.float32)


def yaw_degrees(landmarks: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Head yaw per frame from the 3-D direction between the two cheek contour points: 0 facing
    the camera, +-90 in profile (the sign says which side).
    """
    dx = landmarks[..., CHEEK_RIGHT, 0] - landmarks[..., CHEEK_LEFT, 0]
    dz = depth[..., CHEEK_RIGHT] - depth[..., CHEEK_LEFT]
    return np.degrees(np.arctan2(dz, dx)).astype(np.float32)


def crop_boxes(landmarks: np.ndarray, *, smooth: bool = True) -> np.ndarray:
    """A similarity-aligned square crop per frame: [T, 4] = (centre x, centre y, side, angle).

    The box is FFHQ's alignment rule on eye and mouth centres (face upright, eyes level, whole
    face with forehead and chin inside), so a renderer of the lower face can take the bottom
    half of the aligned crop at any resolution. `angle` is in radians, the rotation of the
    box's x axis in the image. Smoothed over time (zero-phase, offline) so the crop does not
    jitter with landmark noise.
    """
    eye_l = landmarks[:, [EYE_OUTER_LEFT, EYE_INNER_LEFT]].mean(axis=1)
    eye_r = landmarks[:, [EYE_INNER_RIGHT, EYE_OUTER_RIGHT]].mean(axis=1)
    mouth = landmarks[:, [MOUTH_LEFT, MOUTH_RIGHT]].mean(axis=1)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    # x axis: eye line, corrected by the eye-to-mouth direction (perpendicular to it).
    x = eye_to_eye + np.stack([eye_to_mouth[:, 1], -eye_to_mouth[:, 0]], axis=1)
    half = np.maximum(
        np.linalg.norm(eye_to_eye, axis=1) * 2.0, np.linalg.norm(eye_to_mouth, axis=1) * 1.8
    )
    centre = eye_avg + eye_to_mouth * 0.1
    angle = np.arctan2(x[:, 1], x[:, 0])
    if smooth and len(landmarks) > 1:
        from scipy.ndimage import gaussian_filter1d

        centre = gaussian_filter1d(centre, CENTER_SIGMA, axis=0, mode="nearest")
        angle = gaussian_filter1d(np.unwrap(angle), ANGLE_SIGMA, mode="nearest")
        half = np.exp(gaussian_filter1d(np.log(half), SIZE_SIGMA, mode="nearest"))
    return np.column_stack([centre, 2 * half, angle]).astype(np.float32)


def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine matrix taking frame pixels to a `size` x `size` aligned crop of `box`."""
    cx, cy, side, angle = (float(v) for v in box)
    s = size / side
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    # Rotate by -angle about the centre, scale, then move the centre to the crop's centre.
    return np.array(
        [[cos, sin, size / 2 - cos * cx - sin * cy], [-sin, cos, size / 2 + sin * cx - cos * cy]],
        dtype=np.float64,
    )


def crop_face(
    frame: np.ndarray, box: np.ndarray, size: int = 256, *, sharp: bool = False
) -> np.ndarray:
    """The aligned face crop of `frame` (edge pixels repeated where the box leaves the frame).

    `sharp`: bicubic instead of bilinear sampling. Rendering uses it: a frame -> crop -> frame
    round trip keeps 0.88 of the mouth's Laplacian variance bicubic, 0.61 bilinear (Obama 08,
    160 px region).
    """
    import cv2

    return cv2.warpAffine(  # type: ignore[no-any-return]
        frame,
        crop_matrix(box, size),
        (size, size),
        flags=cv2.INTER_CUBIC if sharp else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _downscale(frame: np.ndarray, max_height: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    if h <= max_height:
        return frame, 1.0
    import cv2

    factor = max_height / h
    size = (max(1, round(w * factor)), max_height)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), factor


def _interpolate(points: list[np.ndarray | None], found: np.ndarray) -> np.ndarray:
    """[T, 478, 3] with frames that have no mesh filled linearly from the nearest found ones
    (held constant before the first and after the last); all zeros if none was found.
    """
    out = np.zeros((len(points), MESH_POINTS, 3), np.float32)
    if not found.any():
        return out
    if found.all():
        return np.stack(points).astype(np.float32)  # type: ignore[arg-type]
    have = np.flatnonzero(found)
    known = np.stack([points[i] for i in have]).reshape(len(have), -1)  # type: ignore[misc]
    t = np.arange(len(points))
    flat = out.reshape(len(points), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, have, known[:, j])
    return out
