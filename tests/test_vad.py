import numpy as np
import pytest

from doppel.audio import media, vad
from doppel.errors import InferenceFailed
from doppel.settings import Settings
from doppel.triton import TritonClient
from tests.conftest import shared_file


@pytest.fixture
async def triton(settings: Settings):
    client = TritonClient(settings.triton_grpc_url)
    yield client
    await client.close()


async def _jfk_padded() -> np.ndarray:
    """JFK with one second of digital silence before and after, whole 512-sample chunks."""
    samples = (await media.decode_audio(shared_file("speech", "jfk.flac"))).samples
    silence = np.zeros(vad.RATE, np.float32)
    audio = np.concatenate([silence, samples, silence])
    return audio[: len(audio) - len(audio) % vad.CHUNK]


async def test_vad_marks_jfk_speech_and_the_silence_around_it(triton: TritonClient) -> None:
    audio = await _jfk_padded()
    probs, _ = await triton.vad(audio)
    assert len(probs) == len(audio) // vad.CHUNK
    step = vad.CHUNK / vad.RATE
    t = np.arange(len(probs)) * step
    assert probs[t < 1.0].max() < 0.1  # the silence before
    assert probs[t > 12.8].max() < 0.1  # the silence after
    found = vad.segments(probs)
    assert found, "no speech found"
    # JFK speaks from ~0.32 s to ~10.6 s of the clip (1 s later here).
    assert 1.1 <= found[0].start <= 1.6
    assert 11.2 <= found[-1].end <= 12.0
    speech_time = sum(s.end - s.start for s in found)
    assert 7.0 < speech_time < 10.5


async def test_streaming_through_triton_equals_one_call(triton: TritonClient) -> None:
    audio = await _jfk_padded()
    whole, _ = await triton.vad(audio)
    stream = vad.StreamState()
    parts = []
    piece = 8 * vad.CHUNK  # 256 ms, as a live call would send
    for start in range(0, len(audio) - piece + 1, piece):
        probs, stream = await triton.vad(audio[start : start + piece], stream)
        parts.append(probs)
    streamed = np.concatenate(parts)
    np.testing.assert_allclose(streamed, whole[: len(streamed)], atol=1e-5)


async def test_vad_rejects_partial_chunks(triton: TritonClient) -> None:
    with pytest.raises(InferenceFailed, match="multiple of 512"):
        await triton.vad(np.zeros(1000, np.float32))
