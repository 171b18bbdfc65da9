import numpy as np
import pytest

from doppel.audio import media
from doppel.errors import InvalidMedia
from tests.conftest import lavfi_wav, shared_file


async def test_decodes_flac_to_16k_mono() -> None:
    audio = await media.decode_audio(shared_file("speech", "jfk.flac"))
    assert audio.rate == 16_000
    assert audio.samples.dtype == np.float32
    assert 10.5 < audio.duration_s < 11.5
    assert audio.rms_dbfs > -40
    media.require_speech_candidate(audio)


async def test_decodes_bytes_of_a_video_file() -> None:
    data = shared_file("talking", "grid", "manifest.csv").parent
    clip = sorted(data.glob("*.mpg"))[0]
    audio = await media.decode_audio(clip.read_bytes())
    assert 2.5 < audio.duration_s < 3.5


async def test_garbage_is_unreadable() -> None:
    with pytest.raises(InvalidMedia, match="could not be read"):
        await media.decode_audio(b"this is not audio at all" * 100)


async def test_video_without_audio_track_is_named_as_such() -> None:
    # Obama clip 05 is a real upload with no audio track.
    clip = next(shared_file("talking", "obama").glob("*05*.mp4"))
    with pytest.raises(InvalidMedia, match="no audio track"):
        await media.decode_audio(clip)


async def test_silence_is_rejected_with_its_level() -> None:
    wav = await lavfi_wav("anullsrc=r=16000:cl=mono", 2)
    audio = await media.decode_audio(wav)
    assert audio.duration_s == pytest.approx(2.0, abs=0.05)
    with pytest.raises(InvalidMedia, match="silent"):
        media.require_speech_candidate(audio)


async def test_quiet_tone_is_not_silence() -> None:
    wav = await lavfi_wav("sine=f=220:r=16000,volume=-30dB", 1)
    media.require_speech_candidate(await media.decode_audio(wav))


def test_too_short_is_rejected() -> None:
    audio = media.Audio(samples=np.full(800, 0.1, dtype=np.float32), rate=16_000)
    with pytest.raises(InvalidMedia, match="at least"):
        media.require_speech_candidate(audio)
