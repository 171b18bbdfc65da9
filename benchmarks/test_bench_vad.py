"""VAD latency: one 256 ms live-call piece, alone and as a batch of 8 streams."""

import numpy as np
import pytest

from doppel.audio import vad
from doppel.platform.weights import onnx_path
from export.samples import speech


@pytest.fixture(scope="module")
def silero(models_dir):
    return vad.SileroVad(onnx_path(models_dir, "vad"))


@pytest.mark.parametrize("streams", [1, 8])
def test_vad_piece(benchmark, silero, streams):
    piece = speech()[: 8 * vad.CHUNK]
    audio = np.repeat(piece[None, :], streams, axis=0)
    state = np.zeros((streams, *vad.STATE_SHAPE), np.float32)
    ctx = np.zeros((streams, vad.CONTEXT), np.float32)
    probs, *_ = benchmark(silero.run_batch, audio, state, ctx)
    assert probs.shape == (streams, 8)
    benchmark.extra_info["ms_per_stream_second"] = benchmark.stats["mean"] * 1000 / streams / 0.256
