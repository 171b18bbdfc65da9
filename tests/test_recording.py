"""A call's recording on its own (doppel.live.recording): the slots the media clock makes and the
microphone as it arrives become one MP4 (H.264 + AAC, marked AI-generated) with both voices on
the call's timeline; nothing is left behind when nothing was recorded or the call was deleted.
Real ffmpeg; the live call that feeds it is tests/test_live_media.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doppel.audio.media import decode_audio
from doppel.live.clock import SLOT_SAMPLES, Slot
from doppel.live.recording import MIC_SLOT, Recorder
from tests.test_replicas_videos import probe


def tone(hz: float, count: int, rate: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(count) / rate)).astype(np.float32)


def power_at(samples: np.ndarray, rate: int, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 15].max() / (spectrum.mean() + 1e-9))


async def test_the_replica_and_the_person_land_on_the_calls_timeline(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rec = Recorder(work, (64, 48))
    voice = np.round(tone(440, 25 * SLOT_SAMPLES, 48000) * 32767).astype(np.int16)
    mic = tone(1000, 25 * MIC_SLOT, 16000)
    for i in range(50):
        frame = np.full((48, 64, 3), i * 5, np.uint8)
        if i < 25:  # the replica speaks the first second, then listens
            audio = voice[i * SLOT_SAMPLES : (i + 1) * SLOT_SAMPLES]
        else:  # the person speaks the second: their audio arrives as the slots are made
            audio = np.zeros(SLOT_SAMPLES, np.int16)
            rec.heard(mic[(i - 25) * MIC_SLOT : (i - 24) * MIC_SLOT])
        rec.slot(Slot(i, frame, audio, i < 25))
    out = tmp_path / "call.mp4"
    assert rec.finish(out) == 2.0
    assert not work.exists()  # the working files are gone
    info = probe(out)
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"}
    assert info["format"]["tags"]["comment"].startswith("AI-generated")
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.1
    heard = (await decode_audio(out, 16000)).samples
    first, second = heard[2000:14000], heard[18000:30000]
    assert power_at(first, 16000, 440) > 20 and power_at(first, 16000, 1000) < 5
    assert power_at(second, 16000, 1000) > 20 and power_at(second, 16000, 440) < 5


def test_nothing_recorded_or_a_deleted_call_leaves_no_file(tmp_path: Path) -> None:
    empty = Recorder.create((64, 48))
    assert empty.finish(tmp_path / "none.mp4") is None
    assert not (tmp_path / "none.mp4").exists() and not empty.folder.exists()
    dropped = Recorder.create((64, 48))
    dropped.slot(Slot(0, np.zeros((48, 64, 3), np.uint8), np.zeros(SLOT_SAMPLES, np.int16), False))
    dropped.abort()
    assert not dropped.folder.exists()
    late = np.zeros((48, 64, 3), np.uint8), np.zeros(SLOT_SAMPLES, np.int16)
    dropped.slot(Slot(1, *late, False))  # a slot after the end is ignored
    assert dropped.slots == 1
