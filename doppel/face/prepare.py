"""Training-video preparation: from an uploaded video to what replica training needs.

A 25 fps copy of the video, its 16 kHz mono audio, speech and silence segments, and per frame:
478 face-mesh points, a stable aligned crop and the inner-lip opening. Bad uploads are refused
with `InvalidTrainingVideo` and a message saying what to record instead, cheapest checks first:
the container (no audio, too short) answers from ffprobe alone in milliseconds, the face checks
from a handful of sampled frames, and only then is every frame tracked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio import media
from doppel.audio import vad as vad_module
from doppel.errors import InvalidTrainingVideo
from doppel.face import tracking, video
from doppel.face.tracking import Track
from doppel.platform.progress import Progress, Report, ignore

log = logging.getLogger(__name__)

VIDEO_FILE = "video.mp4"
AUDIO_FILE = "audio.wav"
TRACKS_FILE = "tracks.npz"
META_FILE = "prepared.json"
#: Bumped when the saved layout changes, so an old artefact is recognised rather than misread.
FORMAT_VERSION = 1

#: Speech probabilities for 16 kHz mono samples (a whole number of 512-sample chunks), one per
#: chunk: an array, or a `(probs, state)` pair as `TritonClient.vad` returns, or an awaitable
#: of either. `TritonClient.vad` itself fits, so does `local_vad(models_dir)`.
SpeechProbabilities = Callable[[np.ndarray], Any]
#: `prepare`'s progress stage and its steps: face checks passed, normalised, speech found,
#: tracked.
STAGE = "prepare"
PREPARE_STEPS = 4


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Thresholds of the training-video checks, and how much work the checks may spend."""

    #: Shortest video accepted. A replica needs enough frames of the face and enough speech to
    #: learn the mouth; 10 s is a floor, about 2 minutes gives the renderer varied material.
    min_duration_s: float = 10.0
    #: Least speech the video must hold (VAD), for the audio-to-mouth adaptation.
    min_speech_s: float = 1.0
    fps: int = video.ENGINE_FPS
    max_height: int = video.MAX_HEIGHT
    #: Frames decoded (scaled to `check_height`) for the quick face checks before tracking.
    check_samples: int = 16
    check_height: int = 360
    #: Share of frames allowed without a face (the person may look down or step out briefly).
    max_faceless_share: float = 0.2
    #: Share of frames allowed with more than one face (a detector's occasional false positive).
    max_multi_face_share: float = 0.2
    #: Smallest face (detector box height over frame height): below ~15% a 720p face is under
    #: 110 px, too little for a 160-256 px mouth renderer.
    min_face_height: float = 0.15
    #: Beyond this head yaw the far side of the mouth is hidden and the mesh guesses it.
    max_yaw_deg: float = 30.0
    #: "Turned away" means beyond `max_yaw_deg` on more than this share of the face frames.
    max_turned_share: float = 0.5
    #: Face detection (counting faces) on every n-th frame while tracking; the mesh runs on all.
    detect_every: int = 5


@dataclasses.dataclass
class PreparedVideo:
    """A training video ready for replica training; kept as a job artefact (`save`/`load`)."""

    video_path: Path  # H.264 MP4 at `fps`, constant frame rate (audio kept)
    audio_path: Path  # 16 kHz mono 16-bit WAV
    fps: float
    frame_count: int
    width: int
    height: int
    landmarks: np.ndarray  # [T, 478, 2] float32, pixels of the normalised video
    tracked: np.ndarray  # [T] bool; False: the mesh lost the face, points interpolated
    yaw_deg: np.ndarray  # [T] float32
    #: Faces counted by face detection (run every `detect_every`-th frame; -1 elsewhere).
    face_counts: np.ndarray  # [T] int16
    crop_boxes: np.ndarray  # [T, 4] float32: centre x, centre y, side, angle (radians)
    mouth_opening: np.ndarray  # [T] float32: inner lips 13-14 over eye corners 33-263
    speech: list[vad_module.Segment]  # seconds
    source: str = ""
    #: Seconds spent per step, and tracking ms per frame.
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    def speaking(self) -> np.ndarray:
        """[T] bool: frames inside a speech segment."""
        t = (np.arange(self.frame_count) + 0.5) / self.fps
        mask = np.zeros(self.frame_count, bool)
        for seg in self.speech:
            mask |= (t >= seg.start) & (t < seg.end)
        return mask

    def save(self, folder: Path) -> None:
        """Write `prepared.json` and `tracks.npz` into `folder` (media paths stored relative to
        it when they lie inside, so the folder can be moved as one artefact).
        """
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / TRACKS_FILE,
            landmarks=self.landmarks.astype(np.float32),
            tracked=self.tracked.astype(bool),
            yaw_deg=self.yaw_deg.astype(np.float32),
            face_counts=self.face_counts.astype(np.int16),
            crop_boxes=self.crop_boxes.astype(np.float32),
            mouth_opening=self.mouth_opening.astype(np.float32),
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "video": _relative(self.video_path, folder),
            "audio": _relative(self.audio_path, folder),
            "fps": self.fps,
            "frame_count": self.frame_count,
            "width": self.width,
            "height": self.height,
            "speech": [[round(s.start, 3), round(s.end, 3)] for s in self.speech],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> PreparedVideo:
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder} holds a prepared video of format {meta.get('format_version')}, "
                f"this code reads format {FORMAT_VERSION}: prepare the training video again"
            )
        with np.load(folder / TRACKS_FILE) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        return cls(
            video_path=folder / meta["video"],
            audio_path=folder / meta["audio"],
            fps=float(meta["fps"]),
            frame_count=int(meta["frame_count"]),
            width=int(meta["width"]),
            height=int(meta["height"]),
            landmarks=data["landmarks"],
            tracked=data["tracked"],
            yaw_deg=data["yaw_deg"],
            face_counts=data["face_counts"],
            crop_boxes=data["crop_boxes"],
            mouth_opening=data["mouth_opening"],
            speech=[vad_module.Segment(float(a), float(b)) for a, b in meta["speech"]],
            source=meta.get("source", ""),
            timings={k: float(v) for k, v in meta.get("timings", {}).items()},
        )


async def prepare(
    src: Path,
    out_dir: Path,
    *,
    options: PrepareOptions | None = None,
    vad: SpeechProbabilities | None = None,
    models_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    report: Report = ignore,
    normalised: bool = False,
) -> PreparedVideo:
    """Check and prepare the training video `src` into `out_dir` (saved there, and returned).

    `vad` gives speech probabilities (callers with a platform pass `TritonClient.vad`); without
    one, Silero VAD runs locally from `models_dir`. Raises `InvalidTrainingVideo` when the video
    cannot make a replica. `normalised`: `src` was written by `video.concatenate` or
    `video.normalise` (constant frame rate, H.264): when its rate and height already fit
    `opts`, its streams are copied instead of encoded a second time. `progress` gets lines
    for people; `report` gets Progress("prepare", done, PREPARE_STEPS) as each step passes.
    """
    opts = options or PrepareOptions()
    say = progress or (lambda _: None)
    if vad is None:
        if models_dir is None:
            raise ValueError("pass `vad` (e.g. TritonClient.vad) or `models_dir` for the local VAD")
        vad = local_vad(models_dir)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    info = video.probe(src)
    check_container(info, opts)
    lap("probe_s")
    say(f"{src.name}: {info.duration_s:.1f} s, {info.width}x{info.height}, {info.fps:.2f} fps")

    await asyncio.to_thread(check_sampled_frames, src, opts)
    lap("sample_check_s")
    say("face checks on sampled frames passed")
    report(Progress(STAGE, 1, PREPARE_STEPS))

    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    if (
        normalised
        and info.video_codec == "h264"
        and abs(info.fps - opts.fps) < 1e-3
        and info.height <= opts.max_height
    ):
        norm = await asyncio.to_thread(video.remux, src, out_dir / VIDEO_FILE)
    else:
        norm = await asyncio.to_thread(
            video.normalise, src, out_dir / VIDEO_FILE, fps=opts.fps, max_height=opts.max_height
        )
    lap("normalise_s")
    say(f"normalised to {opts.fps} fps ({norm.width}x{norm.height})")
    report(Progress(STAGE, 2, PREPARE_STEPS))

    audio = await media.decode_audio(norm.path)
    await asyncio.to_thread(write_wav, out_dir / AUDIO_FILE, audio)
    speech = await speech_segments(audio, vad)
    lap("audio_vad_s")
    spoken = sum(s.end - s.start for s in speech)
    say(f"speech: {len(speech)} segments, {spoken:.1f} s of {audio.duration_s:.1f} s")
    report(Progress(STAGE, 3, PREPARE_STEPS))
    if spoken < opts.min_speech_s:
        raise InvalidTrainingVideo(
            f"Almost no speech was heard in the video ({spoken:.1f} s; at least "
            f"{opts.min_speech_s:.0f} s is needed). Record yourself talking, with the "
            "microphone on."
        )

    track = await asyncio.to_thread(track_video, norm.path, opts.detect_every)
    lap("tracking_s")
    per_frame_ms = 1000 * track.seconds / max(track.frame_count, 1)
    timings["tracking_ms_per_frame"] = per_frame_ms
    say(f"tracked {track.frame_count} frames ({per_frame_ms:.1f} ms a frame)")
    report(Progress(STAGE, 4, PREPARE_STEPS))
    check_track(track, opts)

    prepared = PreparedVideo(
        video_path=norm.path,
        audio_path=out_dir / AUDIO_FILE,
        fps=float(opts.fps),
        frame_count=track.frame_count,
        width=track.width,
        height=track.height,
        landmarks=track.landmarks,
        tracked=track.found,
        yaw_deg=track.yaw_deg,
        face_counts=track.face_counts,
        crop_boxes=tracking.crop_boxes(track.landmarks),
        mouth_opening=track.mouth_opening,
        speech=speech,
        source=src.name,
        timings=timings,
    )
    timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s"))
    await asyncio.to_thread(prepared.save, out_dir)
    return prepared


def check_container(info: video.VideoInfo, opts: PrepareOptions) -> None:
    """Checks ffprobe alone answers: an audio track, and enough length."""
    if not info.has_audio:
        raise InvalidTrainingVideo(
            "The video has no audio track. A replica learns your voice and how your mouth "
            "moves with it: upload a recording made with sound."
        )
    if info.duration_s < opts.min_duration_s:
        raise InvalidTrainingVideo(
            f"The video is {info.duration_s:.1f} s long; a replica needs at least "
            f"{opts.min_duration_s:.0f} s of you talking to the camera. Upload a longer recording."
        )


def check_sampled_frames(path: Path, opts: PrepareOptions) -> None:
    """Face checks on `opts.check_samples` frames spread over the video (about a second)."""
    frames, _ = video.sample_frames(path, opts.check_samples, height=opts.check_height)
    counts, heights, yaws = [], [], []
    with tracking.FaceTracker(video=False) as tracker:
        for frame in frames:
            faces = tracker.detect(frame)
            counts.append(len(faces))
            heights.append(faces[0].box[3] / frame.shape[0] if faces else np.nan)
            points = tracker.mesh(frame) if faces else None
            if points is not None:
                yaws.append(float(tracking.yaw_degrees(points[None, :, :2], points[None, :, 2])[0]))
    check_faces(np.array(counts), np.array(heights), np.array(yaws), opts)


def check_track(track: Track, opts: PrepareOptions) -> None:
    """The same face checks on the full tracking (mesh on every frame)."""
    ran = track.face_counts >= 0
    counts = track.face_counts[ran].astype(int)
    # A frame the mesh tracked has a face even if the detector missed it on that frame.
    counts = np.where(track.found[ran] & (counts == 0), 1, counts)
    faceless = 1.0 - float(track.found.mean()) if track.frame_count else 1.0
    check_faces(
        counts, track.face_heights[ran], track.yaw_deg[track.found], opts, faceless_share=faceless
    )


def check_faces(
    counts: np.ndarray,
    heights: np.ndarray,
    yaws: np.ndarray,
    opts: PrepareOptions,
    *,
    faceless_share: float | None = None,
) -> None:
    """Refuse the video on per-frame face statistics: faces counted per frame, the largest
    face's height over the frame height (NaN without a face), head yaw where a mesh was found.
    `faceless_share` overrides the share of frames without a face (the mesh's verdict).
    """
    if len(counts) == 0:
        raise InvalidTrainingVideo("The video holds no frames that could be decoded.")
    faceless = float(np.mean(counts == 0)) if faceless_share is None else faceless_share
    if faceless > opts.max_faceless_share:
        where = "any frame" if faceless >= 1.0 else f"{faceless:.0%} of the video"
        raise InvalidTrainingVideo(
            f"No face was found in {where} (at most {opts.max_faceless_share:.0%} is allowed). "
            "Keep your whole face in the frame, facing the camera, in good light."
        )
    multi = float(np.mean(counts > 1))
    if multi > opts.max_multi_face_share:
        raise InvalidTrainingVideo(
            f"More than one face is visible in {multi:.0%} of the video. Record yourself alone "
            "in the frame (no other people, photos or screens showing faces)."
        )
    size = float(np.nanmedian(heights)) if np.isfinite(heights).any() else 0.0
    if size < opts.min_face_height:
        raise InvalidTrainingVideo(
            f"The face fills only {size:.0%} of the frame height; at least "
            f"{opts.min_face_height:.0%} is needed. Move closer to the camera, or crop the video "
            "around your face."
        )
    if len(yaws):
        turned = np.abs(yaws) > opts.max_yaw_deg
        if float(turned.mean()) > opts.max_turned_share:
            typical = float(np.median(np.abs(yaws[turned])))
            raise InvalidTrainingVideo(
                f"The face is turned away from the camera in {turned.mean():.0%} of the video "
                f"(about {typical:.0f} degrees to the side; up to {opts.max_yaw_deg:.0f} works). "
                "Look into the camera while you talk."
            )


def track_video(path: Path, detect_every: int = 5) -> Track:
    """Mesh on every frame of `path` (and face detection on every `detect_every`-th)."""
    with tracking.FaceTracker(video=True) as tracker:
        return tracker.track(video.read_frames(path), detect_every=detect_every)


async def speech_segments(
    audio: media.Audio, vad: SpeechProbabilities, *, threshold: float = 0.5
) -> list[vad_module.Segment]:
    """Speech segments (seconds) of 16 kHz audio from a VAD's chunk probabilities."""
    if audio.rate != vad_module.RATE:
        raise ValueError(f"VAD needs {vad_module.RATE} Hz audio, got {audio.rate}")
    samples = audio.samples.astype(np.float32)
    samples = np.pad(samples, (0, (-len(samples)) % vad_module.CHUNK))
    result = vad(samples)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, tuple):  # (probs, state), as TritonClient.vad answers
        result = result[0]
    probs = np.asarray(result, np.float32).reshape(-1)
    return vad_module.segments(probs, threshold=threshold)


def local_vad(models_dir: Path) -> SpeechProbabilities:
    """Silero VAD run in-process from the exported ONNX (no Triton), off the event loop."""
    from doppel.platform.weights import onnx_path

    path = onnx_path(models_dir, "vad")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m export vad` (make up does)")
    model = vad_module.SileroVad(path)

    async def probabilities(samples: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(model.probabilities, samples)

    return probabilities


def write_wav(path: Path, audio: media.Audio) -> None:
    """16-bit PCM WAV: every tool reads it, and it is half the size of float32."""
    pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.rate)
        out.writeframes(pcm.tobytes())


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())
