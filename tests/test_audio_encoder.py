"""audio_encoder: Whisper-base encoder features at 25 fps, PyTorch (weights read from the
CTranslate2 checkpoint) against CTranslate2 itself, ONNX Runtime inside Triton against PyTorch."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from doppel.audio import features as af
from doppel.audio import media
from doppel.platform import weights
from doppel.settings import Settings, models_dir_from_env
from doppel.triton import TritonClient
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    path = shared_file("speech", "jfk.flac")
    return asyncio.run(media.decode_audio(path)).samples


@pytest.fixture(scope="module")
def lj_short() -> np.ndarray:
    path = shared_file("speech", "ljspeech", "wavs", "LJ001-0002.wav")  # 1.9 s
    return asyncio.run(media.decode_audio(path)).samples


@pytest.fixture(scope="module")
def whisper_folder() -> Path:
    models_dir = models_dir_from_env(os.environ)
    return weights.model_dir(models_dir, "whisper-base")


@pytest.fixture(scope="module")
def module(whisper_folder):
    import torch

    torch.set_num_threads(1)
    return af.frame_encoder(whisper_folder)


def test_feature_count_is_one_per_25fps_video_frame() -> None:
    assert af.feature_count(16_000) == 25
    assert af.feature_count(16_000 * 11) == 275
    assert af.feature_count(16_000 + 1) == 26  # a partial last frame still gets its features
    assert af.window_count(16_000 * 30) == 1 and af.window_count(16_000 * 30 + 640) == 2


def test_log_mel_matches_whisper(jfk: np.ndarray) -> None:
    import torch
    import whisper.audio

    ref = whisper.audio.log_mel_spectrogram(torch.from_numpy(jfk), padding=whisper.audio.N_SAMPLES)
    ref = whisper.audio.pad_or_trim(ref, af.WINDOW_FRAMES).numpy()
    assert np.abs(af.mel_windows(jfk)[0] - ref).max() < 1e-4


def test_pytorch_encoder_matches_ctranslate2(whisper_folder, jfk: np.ndarray) -> None:
    import ctranslate2
    import torch

    mel = af.mel_windows(jfk)
    with torch.no_grad():
        ours = af.whisper_encoder(whisper_folder)(torch.from_numpy(mel)).numpy()
    ct2 = ctranslate2.models.Whisper(str(whisper_folder), device="cpu", intra_threads=1)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    assert ours.shape == theirs.shape == (1, 1500, 512)
    # Measured: max abs 5.1e-4 on values up to 24 (relative 2.1e-5), mean abs 1.6e-6.
    diff = np.abs(ours - theirs)
    assert diff.max() / np.abs(theirs).max() < 1e-4 and diff.mean() < 1e-5


def test_long_audio_runs_in_30s_windows(module, jfk: np.ndarray) -> None:
    long = np.concatenate([jfk, jfk, jfk])  # 33 s: two windows
    out = af.features(module, long)
    assert out.shape == (af.feature_count(len(long)), 512) == (825, 512)
    # The first window is the first 30 s alone (same peak level, so the same log-mel floor);
    # only the STFT frames at the 30 s edge see the next window's audio instead of silence,
    # which attention spreads thinly over the window (measured: max 6e-3, mostly < 1e-4).
    first = af.features(module, long[: af.WINDOW_SAMPLES])
    assert first.shape == (750, 512)
    diff = np.abs(out[:750] - first)
    assert diff.max() < 5e-2 and diff.mean() < 1e-3


async def test_triton_features_match_pytorch(
    settings: Settings, module, jfk: np.ndarray, lj_short: np.ndarray
) -> None:
    client = TritonClient(settings.triton_grpc_url)
    try:
        # Concurrent requests of different lengths: the dynamic batcher may stack them.
        served = await asyncio.gather(client.encode_audio(jfk), client.encode_audio(lj_short))
    finally:
        await client.close()
    for clip, got in zip((jfk, lj_short), served, strict=True):
        assert got.shape == (af.feature_count(len(clip)), 512)
        assert abs(len(got) - len(clip) / af.SAMPLE_RATE * 25) <= 1  # 25 per second of audio
        want = af.features(module, clip)
        assert np.abs(got - want).max() / np.abs(want).max() < 2e-4
