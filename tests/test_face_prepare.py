"""Training-video preparation on real recordings: a good video prepares, bad ones get the
errors a person can act on (issue 4, item 1)."""

from __future__ import annotations

import os
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from doppel.errors import InvalidMedia, InvalidTrainingVideo
from doppel.face import tracking, video
from doppel.face.prepare import PreparedVideo, PrepareOptions, check_faces, prepare
from doppel.platform.weights import onnx_path
from doppel.settings import models_dir_from_env
from tests.conftest import shared_file

pytestmark = pytest.mark.data

#: GRID clips are 3 s long: the checks under test are the face ones, not the length.
SHORT_CLIPS = PrepareOptions(min_duration_s=2.0)


def ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def models_dir() -> Path:
    folder = models_dir_from_env(os.environ)
    if not onnx_path(folder, "vad").exists():
        pytest.skip(f"needs the exported VAD graph {onnx_path(folder, 'vad')} (`make up` makes it)")
    return folder


@pytest.fixture(scope="module")
async def obama(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> PreparedVideo:
    """Clips 04 and 07 (library setting) joined: 6.7 s of one speaker, 1280x720 29.97 fps."""
    clips = [shared_file("talking", "obama", f"obama_sent_{n}.mp4") for n in ("04", "07")]
    work = tmp_path_factory.mktemp("obama")
    joined = work / "obama_04_07.mp4"
    start = time.perf_counter()
    video.concatenate(clips, joined)
    joined_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = await prepare(
        joined,
        work / "prepared",
        options=PrepareOptions(min_duration_s=5.0),
        models_dir=models_dir,
    )
    total = time.perf_counter() - start
    print(
        f"\nobama 04+07: joined in {joined_s:.2f} s, prepared in {total:.2f} s "
        f"({prepared.frame_count} frames, tracking "
        f"{prepared.timings['tracking_ms_per_frame']:.1f} ms a frame); steps {prepared.timings}"
    )
    return prepared


async def test_obama_clips_prepare_at_25_fps_with_one_tracked_face(obama: PreparedVideo) -> None:
    assert obama.fps == 25.0
    # 4.25 s + 2.48 s of source.
    assert abs(obama.frame_count - 6.73 * 25) <= 3
    assert (obama.width, obama.height) == (1280, 720)
    assert obama.landmarks.shape == (obama.frame_count, tracking.MESH_POINTS, 2)
    assert obama.tracked.mean() >= 0.98
    counted = obama.face_counts[obama.face_counts >= 0]
    assert len(counted) >= obama.frame_count // 5
    assert (counted == 1).all(), "one face on every frame the detector ran on"
    assert np.abs(obama.yaw_deg).max() < 25
    # Landmarks lie on the face, inside the frame.
    assert (obama.landmarks[..., 0].min() > 0) and (obama.landmarks[..., 0].max() < obama.width)
    assert obama.video_path.exists() and obama.audio_path.exists()
    with wave.open(str(obama.audio_path)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16_000, 1)
        assert abs(w.getnframes() / 16_000 - obama.duration_s) < 0.1


async def test_obama_speech_segments_and_mouth_movement(obama: PreparedVideo) -> None:
    spoken = sum(s.end - s.start for s in obama.speech)
    assert spoken > 0.7 * obama.duration_s  # he talks almost throughout
    speaking = obama.speaking()
    mouth = obama.mouth_opening[speaking]
    # The mouth opens and closes while he speaks (closed ~0.01, open ~0.17 of eye distance).
    assert np.percentile(mouth, 95) - np.percentile(mouth, 5) > 0.08
    assert mouth.std() > 0.02
    # ... and follows the loudness: quality.md sees 0.21-0.52 on real clips (mouth may trail
    # the sound by up to 200 ms).
    with wave.open(str(obama.audio_path)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    hop = 16_000 // 25
    n = min(len(audio) // hop, obama.frame_count)
    env = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))
    corr = max(np.corrcoef(env[: n - lag], obama.mouth_opening[lag:n])[0, 1] for lag in range(6))
    assert corr > 0.15


async def test_obama_crop_is_aligned_and_steady(obama: PreparedVideo) -> None:
    boxes = obama.crop_boxes
    assert boxes.shape == (obama.frame_count, 4) and np.isfinite(boxes).all()
    # The face (about 36% of 720 px tall) fits with margin: side ~1.5-2.5x the face height.
    assert (boxes[:, 2] > 300).all() and (boxes[:, 2] < 600).all()
    assert np.degrees(np.abs(boxes[:, 3])).max() < 15  # upright head, level eyes
    raw = tracking.crop_boxes(obama.landmarks, smooth=False)
    size_jitter = np.std(np.diff(np.log(boxes[:, 2])))
    assert size_jitter < 0.005 and size_jitter < np.std(np.diff(np.log(raw[:, 2]))) / 3
    step = np.linalg.norm(np.diff(boxes[:, :2], axis=0), axis=1) / boxes[1:, 2]
    assert np.median(step) < 0.01
    # The crop's centre lands in the middle of the aligned image; the mouth in its lower half.
    m = tracking.crop_matrix(boxes[0], 256)
    centre = m @ np.array([boxes[0, 0], boxes[0, 1], 1.0])
    np.testing.assert_allclose(centre, [128, 128], atol=1e-3)
    mouth = m @ np.append(obama.landmarks[0, tracking.UPPER_INNER_LIP], 1.0)
    assert 128 < mouth[1] < 230 and 90 < mouth[0] < 166


async def test_prepared_video_round_trips_through_its_folder(obama: PreparedVideo) -> None:
    folder = obama.video_path.parent
    loaded = PreparedVideo.load(folder)
    assert loaded.video_path == obama.video_path and loaded.audio_path == obama.audio_path
    assert (loaded.fps, loaded.frame_count, loaded.width, loaded.height) == (
        obama.fps,
        obama.frame_count,
        obama.width,
        obama.height,
    )
    for name in ("landmarks", "tracked", "yaw_deg", "face_counts", "crop_boxes", "mouth_opening"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(obama, name))
    assert [(round(s.start, 3), round(s.end, 3)) for s in loaded.speech] == [
        (round(s.start, 3), round(s.end, 3)) for s in obama.speech
    ]


def _no_frame_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals from the probe must come before any frame is decoded (the cheap check first)."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("frames were decoded before the probe's checks refused the video")

    monkeypatch.setattr(video, "sample_frames", fail)
    monkeypatch.setattr(video, "read_frames", fail)
    monkeypatch.setattr(video, "normalise", fail)


async def test_video_without_audio_is_refused_at_once(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shared_file("talking", "obama", "obama_sent_05.mp4")
    _no_frame_decoding(monkeypatch)
    with pytest.raises(InvalidTrainingVideo, match="no audio track") as caught:
        await prepare(src, tmp_path / "out", models_dir=models_dir)
    assert isinstance(caught.value, InvalidMedia)  # the API's 422
    assert not (tmp_path / "out").exists()


async def test_one_second_clip_is_too_short(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "one_second.mp4"
    ffmpeg(
        "-i",
        str(shared_file("talking", "obama", "obama_sent_04.mp4")),
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        str(src),
    )
    _no_frame_decoding(monkeypatch)
    with pytest.raises(InvalidTrainingVideo, match=r"is 1\.\d s long.*at least 10 s"):
        await prepare(src, tmp_path / "out", models_dir=models_dir)


async def test_video_without_a_face_is_refused(models_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "test_pattern.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=44100",
        "-t",
        "11",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        str(src),
    )
    with pytest.raises(InvalidTrainingVideo, match="No face was found in any frame"):
        await prepare(src, tmp_path / "out", models_dir=models_dir)


async def test_two_people_side_by_side_are_refused(models_dir: Path, tmp_path: Path) -> None:
    grid = [shared_file("talking", "grid", name) for name in ("bbaf2n.mpg", "brbk7n.mpg")]
    src = tmp_path / "two_faces.mp4"
    ffmpeg(
        "-i",
        str(grid[0]),
        "-i",
        str(grid[1]),
        "-filter_complex",
        "[0:v][1:v]hstack=inputs=2[v]",
        "-map",
        "[v]",
        "-map",
        "0:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        str(src),
    )
    with pytest.raises(InvalidTrainingVideo, match="More than one face is visible in 100%"):
        await prepare(src, tmp_path / "out", options=SHORT_CLIPS, models_dir=models_dir)


async def test_small_face_is_refused(models_dir: Path, tmp_path: Path) -> None:
    # A 360x288 GRID talker in the middle of a 1440x1152 canvas: the face is ~12% of the height.
    src = tmp_path / "far_away.mp4"
    ffmpeg(
        "-i",
        str(shared_file("talking", "grid", "lbax4n.mpg")),
        "-vf",
        "pad=1440:1152:540:432:black",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        str(src),
    )
    with pytest.raises(InvalidTrainingVideo, match=r"fills only 1\d% of the frame height"):
        await prepare(src, tmp_path / "out", options=SHORT_CLIPS, models_dir=models_dir)


async def test_grid_talker_prepares(models_dir: Path, tmp_path: Path) -> None:
    """The same clip unpadded is fine: the small-face refusal is about size, not the person."""
    src = shared_file("talking", "grid", "lbax4n.mpg")
    prepared = await prepare(src, tmp_path / "out", options=SHORT_CLIPS, models_dir=models_dir)
    assert prepared.frame_count == 75 and prepared.tracked.all()
    assert len(prepared.speech) >= 1


def test_yaw_estimate_follows_a_real_face_turned_in_3d() -> None:
    """Turn the 3-D mesh of a real frontal face about the vertical axis and project it: the
    estimate must follow the turn (orthographic projection, as the mesh's z is)."""
    frames, _ = video.sample_frames(shared_file("talking", "grid", "lbax4n.mpg"), 1, height=288)
    with tracking.FaceTracker(video=False) as tracker:
        points = tracker.mesh(np.ascontiguousarray(frames[0]))
    assert points is not None
    base = float(tracking.yaw_degrees(points[None, :, :2], points[None, :, 2])[0])
    assert abs(base) < 10
    centred = points - points.mean(axis=0)
    for turn in (20.0, 45.0, 70.0):
        a = np.radians(turn)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        turned = centred @ rot.T
        yaw = float(tracking.yaw_degrees(turned[None, :, :2], turned[None, :, 2])[0])
        assert abs(abs(yaw - base) - turn) < 3, (turn, yaw)


def test_face_checks_name_the_problem() -> None:
    opts = PrepareOptions()
    one, tall = np.ones(20, int), np.full(20, 0.4)
    check_faces(one, tall, np.zeros(20), opts)  # a good video passes
    with pytest.raises(InvalidTrainingVideo, match="turned away .* in 75%"):
        check_faces(one, tall, np.r_[np.full(15, 50.0), np.zeros(5)], opts)
    with pytest.raises(InvalidTrainingVideo, match=r"No face was found in 50% of the video"):
        check_faces(np.r_[np.zeros(10, int), np.ones(10, int)], tall, np.zeros(10), opts)
    # Brief misses are tolerated (looking down, a blink of the detector).
    check_faces(np.r_[np.zeros(2, int), np.ones(18, int)], tall, np.zeros(18), opts)
