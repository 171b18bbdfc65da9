"""audio_encoder on ONNX Runtime: ms of compute per second of audio for JFK's 11 s, one clip
per run and eight clips (eight 30 s windows) per run, as Triton's dynamic batcher would."""

import pytest

from doppel.audio.features import SAMPLE_RATE, OnnxAudioEncoder, feature_count
from doppel.platform.weights import onnx_path
from export.samples import speech


@pytest.fixture(scope="module")
def encoder(models_dir):
    # Two intra-op threads: what the served model uses on the 2-core target.
    return OnnxAudioEncoder(onnx_path(models_dir, "audio_encoder"), threads=2)


@pytest.mark.parametrize("clips", [1, 8])
def test_audio_encoder_clips(benchmark, encoder, clips):
    audio = speech()
    batch = [audio] * clips
    out = benchmark.pedantic(encoder.encode, args=(batch,), rounds=3, warmup_rounds=1)
    assert [f.shape for f in out] == [(feature_count(len(audio)), 512)] * clips
    seconds = clips * len(audio) / SAMPLE_RATE
    benchmark.extra_info["ms_per_audio_second"] = benchmark.stats["mean"] * 1000 / seconds
