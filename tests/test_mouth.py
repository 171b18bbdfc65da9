"""Audio -> mouth shape (doppel/face/mouth.py) on real clips: the shape representation inverts, the
committed generic checkpoint loads and runs, and adapting it on two Obama clips predicts a
held-out clip's lip motion from its audio.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from doppel.face import mouth, tracking, video
from doppel.platform.weights import onnx_path
from doppel.settings import REPO_ROOT
from tests.conftest import shared_file

pytestmark = [pytest.mark.data, pytest.mark.timeout(120)]

CHECKPOINT = REPO_ROOT / "doppel" / "assets" / "mouth_generic.pt"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    import torch

    # Two shared cores: more torch threads than cores slows small models 10x (lipsync findings).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def encoder() -> object:
    from doppel.audio.features import OnnxAudioEncoder

    folder = Path(os.environ.get("DOPPEL_MODELS_DIR", Path.home() / ".cache/doppel/models"))
    path = onnx_path(folder, "audio_encoder")
    if not path.exists():
        pytest.skip(f"needs the exported audio encoder {path} (`make up` makes it)")
    return OnnxAudioEncoder(path, threads=1)


@pytest.fixture(scope="module")
def obama(encoder: object) -> dict[str, mouth.Clip]:
    """Clips 04 and 07 (adaptation) and 08 (held out): one setting, tracked at 640x360."""
    clips = {}
    with tracking.FaceTracker(video=True) as tracker:
        for n in ("04", "07", "08"):
            path = shared_file("talking", "obama", f"obama_sent_{n}.mp4")
            clips[n] = mouth.extract_clip(path, encoder, tracker, size=(640, 360))
    return clips


def test_face_frame_and_pca_round_trip_on_real_landmarks() -> None:
    path = shared_file("talking", "grid", "bbaf2n.mpg")
    with tracking.FaceTracker(video=True) as tracker:
        track = tracker.track(video.read_frames(path), detect_every=1000)
    frames = mouth.face_frames(track.landmarks)
    points = mouth.to_face_frame(track.landmarks, frames)
    back = mouth.from_face_frame(points, frames)
    np.testing.assert_allclose(back, track.landmarks[:, list(mouth.POINTS)], atol=1e-2)
    np.testing.assert_allclose(mouth.onto_mesh(points, track.landmarks), track.landmarks, atol=1e-2)
    # The aligned opening is quality.md's (13-14 over 33-263), up to the smoothed eye distance.
    corr = np.corrcoef(mouth.opening(points), track.mouth_opening)[0, 1]
    assert corr > 0.98
    # A basis from this person's frames keeps the mouth motion: 16 numbers per frame.
    mean = points.mean(axis=0)
    basis = mouth.MouthBasis.fit(points - mean, 16)
    rebuilt = basis.decode(basis.encode(points, mean), mean)
    assert np.abs(rebuilt - points).max() < 0.01  # eye distances
    assert np.corrcoef(mouth.opening(rebuilt), mouth.opening(points))[0, 1] > 0.99


def test_generic_checkpoint_loads_and_predicts_every_frame(obama: dict[str, mouth.Clip]) -> None:
    assert CHECKPOINT.stat().st_size < 5_000_000
    model = mouth.MouthModel.load(CHECKPOINT)
    clip = obama["08"]
    points = model.predict(clip.features)
    assert points.shape == (len(clip.features), len(mouth.POINTS), 2)
    assert np.isfinite(points).all()
    assert mouth.opening(points).std() > 0  # it moves


def test_adaptation_on_two_clips_follows_held_out_lips(obama: dict[str, mouth.Clip]) -> None:
    generic = mouth.MouthModel.load(CHECKPOINT)
    train = [obama["04"], obama["07"]]
    model = mouth.adapt(generic, train, steps=150, folds=0)
    held = obama["08"]
    real = mouth.opening(held.points)
    pred = mouth.opening(model.predict(held.features))
    static = np.repeat(mouth.person_mean(train)[None], len(held.features), 0)
    # A still mouth has no correlation with anything (nan: zero variance); count it as 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        static_corr = np.nan_to_num(np.corrcoef(mouth.opening(static), real)[0, 1])
    corr = np.corrcoef(pred, real)[0, 1]
    assert corr > max(static_corr, 0.0) + 0.3, corr


def test_anchor_moves_the_mouth_to_the_base_without_reshaping_it() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(200)
    points = rng.normal(size=(200, len(mouth.POINTS), 2)).astype(np.float32) * 0.05
    # The base's mouth sits elsewhere by a slowly changing offset (head pose), its own lips
    # moving fast with another sentence.
    drift = np.stack([0.02 * np.sin(t / 60), 0.1 + 0.05 * np.cos(t / 50)], axis=1)
    own = points + drift[:, None, :] + rng.normal(size=points.shape) * 0.02
    placed = mouth.anchor(points, own.astype(np.float32))
    # A translation per frame: the shape, and so the opening, is the prediction's own.
    assert np.allclose(mouth.opening(placed), mouth.opening(points), atol=1e-5)
    moved = (placed - points)[:, 0]
    assert np.allclose(placed - points, moved[:, None, :], atol=1e-5)
    assert np.abs(moved - drift)[20:-20].max() < 0.015
