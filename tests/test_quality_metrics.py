"""benchmarks/quality/video_metrics.py on real files: Obama's held-out clip 08 against itself,
against copies of itself made with ffmpeg (3 frames late, a still first frame), against a test
pattern and against another person (GRID speaker s1).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.quality import video_metrics as vm
from tests.conftest import shared_file

os.environ.setdefault("OMP_NUM_THREADS", "1")

pytestmark = pytest.mark.data

ENCODE = ["-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def obama08() -> Path:
    return shared_file("talking", "obama", "obama_sent_08.mp4")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video_metrics")


@pytest.fixture(scope="module")
def real(obama08: Path) -> vm.VideoAnalysis:
    return vm.analyse(obama08)


@pytest.fixture(scope="module")
def delayed(obama08: Path, work: Path) -> vm.VideoAnalysis:
    """08 at 25 fps with its first frame shown 3 extra times (video 120 ms late, audio kept)."""
    out = work / "delayed.mp4"
    vf = "fps=25,tpad=start=3:start_mode=clone"
    ffmpeg("-i", str(obama08), "-vf", vf, *ENCODE, "-c:a", "aac", str(out))
    return vm.analyse(out)


def test_real_against_itself(real: vm.VideoAnalysis) -> None:
    assert real.frames == 72  # 2.87 s at 25 fps
    assert real.landmarks.shape == (72, 478, 2) and real.found.shape == (72,)
    assert real.envelope.shape == (72,) and np.isfinite(real.envelope).all()
    assert real.has_audio and real.envelope.max() > 0.01
    assert real.mouth_crops.shape == (72, vm.MOUTH_SIZE, vm.MOUTH_SIZE, 3)
    sync = vm.mouth_sync(real, real)
    assert sync["mouth_corr"] > 0.99
    assert sync["offset_ms"] == 0
    assert sync["motion"] == pytest.approx(1.0, abs=1e-6)
    assert vm.identity(real, real) < 0.3
    assert vm.identity(real, [real, real]) == pytest.approx(vm.identity(real, real))
    assert vm.sharpness(real, real) == pytest.approx(1.0)
    assert vm.face_rate(real) == 1.0
    # quality.md: real clips 0.21-0.52.
    assert 0.15 < vm.env_corr(real) < 0.6


def test_delay_is_measured(real: vm.VideoAnalysis, delayed: vm.VideoAnalysis) -> None:
    assert delayed.frames == real.frames + 3
    sync = vm.mouth_sync(delayed, real)
    assert sync["offset_ms"] == 120
    assert sync["mouth_corr"] < 0.9  # at zero lag the copy is out of step
    assert sync["motion"] == pytest.approx(1.0, abs=0.05)
    assert vm.identity(delayed, real) < 0.3
    assert vm.sharpness(delayed, real) == pytest.approx(1.0, abs=0.2)
    # And the other way round: the real clip leads.
    assert vm.mouth_sync(real, delayed)["offset_ms"] == -120


def test_still_mouth_has_no_motion(obama08: Path, work: Path, real: vm.VideoAnalysis) -> None:
    out = work / "still.mp4"
    graph = "[0:v]fps=25,trim=end_frame=1,tpad=stop=49:stop_mode=clone[v]"
    maps = ["-map", "[v]", "-map", "0:a"]
    ffmpeg(
        "-i",
        str(obama08),
        "-filter_complex",
        graph,
        *maps,
        *ENCODE,
        "-c:a",
        "aac",
        "-t",
        "2",
        str(out),
    )
    still = vm.analyse(out, max_frames=50)
    assert still.frames == 50 and vm.face_rate(still) == 1.0
    assert still.envelope.max() > 0.01  # 08's audio is there
    assert vm.mouth_sync(still, real)["motion"] < 0.1
    assert vm.identity(still, real) < 0.3


def test_no_face(work: Path) -> None:
    out = work / "testsrc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "1", *ENCODE, str(out))
    pattern = vm.analyse(out)
    assert pattern.frames == 25
    assert vm.face_rate(pattern) == 0.0
    assert not pattern.has_audio and (pattern.envelope == 0).all()
    assert np.isnan(vm.env_corr(pattern))
    assert np.isnan(vm.sharpness(pattern, pattern))


def test_other_person(real: vm.VideoAnalysis) -> None:
    grid = vm.analyse(shared_file("talking", "grid_s1", "video", "bbaf2n.mp4"), max_frames=25)
    assert grid.frames == 25 and vm.face_rate(grid) == 1.0
    assert vm.identity(grid, real) > 0.5  # dlib's same-person threshold is 0.6


def test_contact_sheet_and_table(
    real: vm.VideoAnalysis, delayed: vm.VideoAnalysis, tmp_path: Path
) -> None:
    sheet = vm.contact_sheet([("real", real), ("delayed", delayed)], tmp_path / "s.png", frames=4)
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] > 2 * 100 and image.shape[1] > 4 * 100
    # Row 1 at frame 0 is real frame 0; row 2 at frame 0 is the clone of it (same pixels).
    cell, header, label = 160, 28, 170
    first = image[header : header + cell, label : label + cell].astype(int)
    second = image[header + cell : header + 2 * cell, label : label + cell].astype(int)
    assert first.std() > 10 and np.abs(first - second).mean() < 12
    table = vm.markdown_table(
        [{"clip": "real", "motion": 1.0}, {"clip": "a|b", "motion": float("nan")}],
        ["clip", "motion", "missing"],
    )
    assert table.splitlines() == [
        "| clip | motion | missing |",
        "|---|---|---|",
        "| real | 1.000 |  |",
        "| a\\|b | nan |  |",
    ]
