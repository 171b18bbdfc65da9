"""The GPU stt path (whisper_trt style) up to where a GPU is needed: the same CTranslate2 weights
in PyTorch encoder + decoder modules, driven by the greedy loop the GPU BLS model runs."""

import pytest

from doppel.audio.features import mel_windows
from doppel.audio.whisper_greedy import tokenizer, transcribe_window
from doppel.platform import weights
from export.stt_trt import main as stt_trt_main
from export.stt_trt import torch_runners
from export.tensorrt import GpuUnavailable, require_gpu
from tests.conftest import shared_file


def test_pytorch_whisper_from_ct2_weights_transcribes_jfk(settings) -> None:
    import asyncio

    import torch

    from doppel.audio import media

    torch.set_num_threads(1)
    folder = weights.model_dir(settings.models_dir, "whisper-base")
    encode, decode = torch_runners(folder)
    audio = asyncio.run(media.decode_audio(shared_file("speech", "jfk.flac")))
    text = transcribe_window(mel_windows(audio.samples)[:1], encode, decode, tokenizer(folder))
    assert "ask not what your country can do for you" in text.lower().replace(",", "")


def test_gpu_build_stops_with_a_message_here(tmp_path) -> None:
    try:
        require_gpu()
    except GpuUnavailable:
        assert stt_trt_main(["--out", str(tmp_path)]) == 3
    else:
        pytest.skip("a GPU is present")
