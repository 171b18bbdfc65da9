"""Cloned speech served by Triton (`voice`, `voice_stream`): the same audio and timings as the
in-process voice, streamed sentences that add up to the whole with silent joins, clear errors
for bad voices and text, and a retrained voice picked up without a restart.

The voice is learned here from ~20 s of LJ Speech with small settings (Festival's "slt" as the
base voice, which is deterministic, so in-process and served audio can be compared sample by
sample); `tests/test_voice.py` judges how it sounds.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch

from doppel.audio.media import decode_audio
from doppel.errors import InferenceFailed
from doppel.settings import Settings
from doppel.triton import TritonClient, TritonTranscriber
from doppel.voice import learning, world
from doppel.voice.clone import ClonedVoice
from doppel.voice.profile import VOICE_ONNX, train
from doppel.voice.serving import speech_timings
from tests.conftest import shared_file

torch.set_num_threads(1)
TEXT = "The weather was cold that morning. So we stayed inside and read books by the fire."
RATE = world.RATE


def _train(models_dir: Path, folder: Path, seed: int) -> Path:
    """A small profile from LJ001-0001..0003 with their metadata transcripts (~6 s)."""
    meta = shared_file("speech", "ljspeech", "metadata.csv")
    with meta.open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))[:3]
    clips = [
        asyncio.run(decode_audio(shared_file("speech", "ljspeech", "wavs", f"{r[0]}.wav"))).samples
        for r in rows
    ]
    learned = train(
        clips,
        models_dir,
        transcripts=[r[2] for r in rows],
        options=learning.TrainOptions(epochs=4, align_passes=1, seed=seed, validate=False),
        base_voice="festival-slt",
    )
    learned.save(folder)
    return folder


@pytest.fixture(scope="module")
def voice_dir(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(settings.models_dir, tmp_path_factory.mktemp("voice") / "lj", seed=0)


@pytest.fixture
async def triton(settings: Settings) -> AsyncIterator[TritonClient]:
    client = TritonClient(settings.triton_grpc_url)
    yield client
    await client.close()


async def _stream(triton: TritonClient, voice: Path, text: str) -> list:
    return [part async for part in triton.say_stream(voice, text)]


async def test_triton_speaks_exactly_like_the_in_process_voice(
    triton: TritonClient, settings: Settings, voice_dir: Path
) -> None:
    assert (voice_dir / VOICE_ONNX).is_file()
    local = ClonedVoice.load(voice_dir, settings.models_dir)
    assert local.map_coded is not None  # the same graph as Triton runs
    speech = local.say(TEXT)
    start = time.perf_counter()
    audio, timings = await triton.say(voice_dir, TEXT)
    first = time.perf_counter() - start
    assert audio.rate == timings["sample_rate"] == RATE
    assert audio.samples.shape == speech.audio.shape
    np.testing.assert_allclose(audio.samples, speech.audio, atol=1e-5)
    assert timings == speech_timings(speech)
    assert [w["word"] for w in timings["words"]][-2:] == ["the", "fire"]
    assert timings["phonemes"] and len(timings["sentences"]) == 2
    # Real-time factor once the voice is cached (the first request also loads it).
    start = time.perf_counter()
    again, _ = await triton.say(voice_dir, TEXT)
    warm = time.perf_counter() - start
    np.testing.assert_array_equal(again.samples, audio.samples)
    diff = float(np.abs(audio.samples - speech.audio).max())
    print(
        f"\nvoice via Triton: {audio.duration_s:.2f} s of speech in {warm:.2f} s "
        f"(RTF {warm / audio.duration_s:.3f}; first request {first:.2f} s); "
        f"max abs difference from in-process {diff:.2g}"
    )


async def test_streamed_sentences_add_up_to_the_whole_without_clicks(
    triton: TritonClient, voice_dir: Path
) -> None:
    whole, timings = await triton.say(voice_dir, TEXT)
    start = time.perf_counter()
    parts, first = [], 0.0
    async for part in triton.say_stream(voice_dir, TEXT):
        first = first or time.perf_counter() - start
        parts.append(part)
    print(
        f"\nvoice_stream: first sentence after {first:.2f} s, all after "
        f"{time.perf_counter() - start:.2f} s"
    )
    assert len(parts) == len(timings["sentences"]) == 2
    assert [t for _, t in parts] == timings["sentences"]
    streamed = np.concatenate([a.samples for a, _ in parts])
    np.testing.assert_allclose(streamed, whole.samples, atol=1e-5)
    # Timings line up: each sentence starts where the previous one ended, on the audio's clock.
    end = 0.0
    for audio, t in parts:
        assert t["start"] == pytest.approx(end, abs=1e-3)
        assert all(t["start"] <= w["start"] < w["end"] <= t["end"] + 1e-3 for w in t["words"])
        end += audio.duration_s
        assert t["end"] == pytest.approx(end, abs=1e-3)
    # No click at the join: both sides fade to silence, and the waveform's steps there are no
    # larger than its ordinary ones.
    a, b = parts[0][0].samples, parts[1][0].samples
    assert abs(a[-1]) < 1e-3 and abs(b[0]) < 1e-3
    join = len(a)
    around = np.abs(np.diff(streamed[join - 80 : join + 80]))
    assert around.max() <= np.percentile(np.abs(np.diff(streamed)), 99)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("relative", "relative path"),
        ("not_a_profile", "not a voice profile"),
        ("no_onnx", "voice export"),
        ("none", "No voice given"),
    ],
)
async def test_a_bad_voice_folder_is_a_clear_error(
    triton: TritonClient, settings: Settings, voice_dir: Path, tmp_path: Path, case: str, message
) -> None:
    folder = {
        "missing": tmp_path / "nowhere",
        "relative": Path("voices/lj"),
        "not_a_profile": tmp_path,
        "no_onnx": tmp_path / "old",
        "none": Path(""),
    }[case]
    if case == "no_onnx":
        # A profile saved before voice.onnx existed: still speaks in-process (numpy MLP).
        shutil.copytree(voice_dir, folder)
        (folder / VOICE_ONNX).unlink()
        old = ClonedVoice.load(folder, settings.models_dir)
        assert old.map_coded is None and len(old.say("Hello there.").audio) > RATE // 4
    voice = folder if case != "none" else ""
    with pytest.raises(InferenceFailed, match=message):
        await triton.say(voice, TEXT)  # type: ignore[arg-type]
    with pytest.raises(InferenceFailed, match=message):
        await _stream(triton, voice, TEXT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"), [("", "The text is empty"), (" ... ", "The text is empty")]
)
async def test_text_with_nothing_to_say_is_a_clear_error(
    triton: TritonClient, voice_dir: Path, text: str, message: str
) -> None:
    with pytest.raises(InferenceFailed, match=message):
        await triton.say(voice_dir, text)
    with pytest.raises(InferenceFailed, match=message):
        await _stream(triton, voice_dir, text)


async def test_too_long_text_is_a_clear_error(triton: TritonClient, voice_dir: Path) -> None:
    text = "word " * 2001
    with pytest.raises(InferenceFailed, match="send at most 10000"):
        await triton.say(voice_dir, text)
    with pytest.raises(InferenceFailed, match="send at most 10000"):
        await _stream(triton, voice_dir, text)


async def test_a_retrained_voice_is_reloaded(
    triton: TritonClient, settings: Settings, voice_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "voice"
    shutil.copytree(voice_dir, folder)
    before, _ = await triton.say(folder, "It has never been surpassed.")
    await asyncio.to_thread(_train, settings.models_dir, folder, 1)  # trained again, in place
    after, _ = await triton.say(folder, "It has never been surpassed.")
    local = ClonedVoice.load(folder, settings.models_dir).say("It has never been surpassed.")
    assert not np.allclose(after.samples, before.samples, atol=1e-3)
    np.testing.assert_allclose(after.samples, local.audio, atol=1e-5)


def test_cli_say_goes_through_triton(
    settings: Settings, voice_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from scipy.io import wavfile

    from doppel.__main__ import main

    out, timings = tmp_path / "out.wav", tmp_path / "t.json"
    args = ["say", "--voice", str(voice_dir), "--text", "It has never been surpassed."]
    args += ["--out", str(out), "--timings", str(timings), "--triton", settings.triton_grpc_url]
    assert main(args) == 0
    assert "spoken through Triton" in capsys.readouterr().out
    rate, audio = wavfile.read(out)
    assert rate == RATE and len(audio) > RATE // 2
    words = [w["word"].lower() for w in json.loads(timings.read_text())["words"]]
    assert words == ["it", "has", "never", "been", "surpassed"]


def test_enrolment_transcribes_through_tritons_stt(settings: Settings) -> None:
    """Voice training on the platform hears its speech through Triton's `stt` (beam 5), with
    the same words and segments as Whisper in-process, and cuts the clip by its segments."""
    from doppel.voice import enrol

    clip = asyncio.run(
        decode_audio(shared_file("speech", "ljspeech", "wavs", "LJ001-0005.wav"))
    ).samples
    served = TritonTranscriber(settings.triton_grpc_url)
    remote = served.transcribe(clip, language="en", beam_size=5)
    local = enrol.local_transcriber(settings.models_dir).transcribe(
        clip, language="en", beam_size=5
    )
    assert remote["text"] == local["text"] and "invention" in remote["text"].lower()
    assert [s["start"] for s in remote["segments"]] == [s["start"] for s in local["segments"]]
    utts = enrol.utterances([clip], None, settings.models_dir, stt=served)
    assert utts and " ".join(u.text for u in utts) == remote["text"]
    assert sum(u.duration_s for u in utts) <= len(clip) / RATE + 0.2 * len(utts)
