"""Speech-to-text latency per call (Whisper base, CTranslate2 int8), beam 5 vs beam 1."""

import asyncio

import pytest

from doppel.audio import media
from doppel.audio.stt import SpeechToText, SttOptions
from doppel.platform import weights
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def jfk():
    return asyncio.run(media.decode_audio(shared_file("speech", "jfk.flac"))).samples


@pytest.fixture(scope="module")
def stt(models_dir):
    return SpeechToText(weights.model_dir(models_dir, "whisper-base"), SttOptions())


@pytest.mark.parametrize("beam", [1, 5])
def test_stt_jfk(benchmark, stt, jfk, beam):
    benchmark.extra_info["audio_s"] = len(jfk) / 16000
    doc = benchmark.pedantic(
        stt.transcribe,
        args=(jfk,),
        kwargs={"beam_size": beam},
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    assert "ask not" in doc["text"].lower()
    benchmark.extra_info["real_time_factor"] = benchmark.stats["mean"] / (len(jfk) / 16000)
