"""Voice cloning on real speech: a profile learned from ~40 s of LJ Speech (small settings, so
the whole module runs in about a minute) must sound closer to the target than its base voice,
keep the base voice's timings, and refuse unusable input with a clear error.

The full-size evaluation (60 s of training speech, ten held-out sentences, Whisper WER, a male
target too) is `benchmarks/quality/voice.py`.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from doppel.audio.media import decode_audio
from doppel.errors import InvalidRequest, InvalidVoiceSample
from doppel.settings import default_cache_dir
from doppel.voice import base_voices, conversion, enrol, learning, loudness, validate, world
from doppel.voice.clone import ClonedVoice, CloneSettings
from doppel.voice.profile import VoiceProfile, train
from doppel.voice.tts import Timing
from tests.conftest import shared_file

torch.set_num_threads(1)
RATE = world.RATE
HELD_OUT = "Could you please send me the quarterly report before Friday afternoon?"
HARVARD = validate.SENTENCES


def _models_dir() -> Path:
    return Path(os.environ.get("DOPPEL_MODELS_DIR", default_cache_dir(os.environ) / "models"))


def _lj(name: str) -> np.ndarray:
    path = shared_file("speech", "ljspeech", "wavs", f"{name}.wav")
    return asyncio.run(decode_audio(path)).samples


@pytest.fixture(scope="module")
def lj_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A profile learned from LJ001-0001..0006 with their metadata transcripts (~40 s)."""
    meta = shared_file("speech", "ljspeech", "metadata.csv")
    with meta.open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))[:6]
    learned = train(
        [_lj(r[0]) for r in rows],
        _models_dir(),
        transcripts=[r[2] for r in rows],
        options=learning.TrainOptions(epochs=8, align_passes=1),
    )
    folder = tmp_path_factory.mktemp("voice") / "lj"
    learned.save(folder)
    return folder


@pytest.fixture(scope="module")
def lj_centroid() -> np.ndarray:
    encoder = enrol.SpeakerEncoder()
    embs = [encoder.embed(_lj(f"LJ001-{n:04d}")) for n in range(21, 25)]
    centroid = np.mean(embs, axis=0)
    return centroid / np.linalg.norm(centroid)


def test_profile_picks_the_female_base_voice_for_lj_speech(lj_profile: Path) -> None:
    profile = VoiceProfile.load(lj_profile)
    assert profile.base_voice == "festival-slt", profile.base_similarity
    assert 35 < profile.speech_s < 60
    assert len(profile.embedding) == 256


def test_cloned_voice_is_closer_to_the_target_than_the_base_voice(
    lj_profile: Path, lj_centroid: np.ndarray
) -> None:
    voice = ClonedVoice.load(lj_profile, _models_dir())
    (base,) = voice.base.speak([HELD_OUT])
    cloned = voice.convert(base)
    encoder = enrol.SpeakerEncoder()
    base_sim = float(encoder.embed(base.audio) @ lj_centroid)
    cloned_sim = float(encoder.embed(cloned) @ lj_centroid)
    assert cloned_sim > base_sim + 0.08, (base_sim, cloned_sim)


def test_timings_survive_conversion(lj_profile: Path) -> None:
    voice = ClonedVoice.load(lj_profile, _models_dir())
    text = "The weather was cold. So we stayed inside and read books by the fire."
    speech = voice.say(text)
    bases = voice.base.speak(voice.sentences(text))
    assert len(speech.sentences) == len(bases) == 2
    offset = 0.0
    for cloned, base in zip(speech.sentences, bases, strict=True):
        # WORLD keeps the frame grid: same length, so the same timings hold.
        assert len(cloned.audio) == len(base.audio)
        assert [w.text for w in cloned.words] == [w.text for w in base.words]
        for c, b in zip(cloned.words, base.words, strict=True):
            assert c.start == pytest.approx(b.start + offset)
        assert cloned.phonemes and cloned.offset_s == pytest.approx(offset)
        offset += cloned.duration_s
    assert speech.words[-1].text.lower() == "fire"
    assert speech.words[-1].end <= len(speech.audio) / RATE + 1e-6
    level = loudness.integrated_loudness(speech.sentences[0].audio, RATE)
    assert level == pytest.approx(loudness.TARGET_LUFS, abs=1.0)


def test_profile_records_phone_labels_and_a_checked_strength(lj_profile: Path) -> None:
    profile = VoiceProfile.load(lj_profile)
    conv = profile.conversion
    # Festival's phone set; nearly every sounding target frame is aligned to a phone.
    assert {"aa", "iy", "s", "t"} <= set(conv.phones), conv.phones
    assert len(conv.pool_labels) == len(conv.pool)
    assert (conv.pool_labels >= 0).mean() > 0.8
    assert conv.members == 3 and conv.f0_quantiles.shape == (2, conversion.F0_QUANTILES)
    # The target's level and pitch on each phone (and on no known phone, the last entry).
    assert conv.phone_level.shape == conv.phone_pitch.shape == (len(conv.phones) + 1,)
    assert np.isfinite(conv.phone_level).all() and np.isfinite(conv.phone_pitch).all()
    # The strength kept is the strongest whose words Whisper still hears.
    v = profile.validation
    assert v["strength"] == conv.strength and f"{conv.strength:.2f}" in v["tried"]
    assert v["wer"] <= v["base_wer"] + validate.WER_MARGIN
    assert all(w > v["base_wer"] + validate.WER_MARGIN for w in list(v["tried"].values())[:-1])


def test_a_conversion_that_smears_words_is_weakened(lj_profile: Path) -> None:
    """A mapping that turns every frame into one sound (the MLP's last layer zeroed, no kNN
    pool) is unintelligible at full strength: validation must keep a weaker one."""
    conv = VoiceProfile.load(lj_profile).conversion
    w = conv.member_weights()[0]
    smear = dataclasses.replace(
        conv,
        weights=[*w[:-2], np.zeros_like(w[-2]), w[-1]],
        members=1,
        pool=conv.pool[:0],
        pool_labels=conv.pool_labels[:0],
    )
    voice = base_voices.FestivalBase()
    try:
        choice = validate.choose_strength(smear, voice, _models_dir(), sentences=HARVARD[:4])
    finally:
        voice.close()
    assert choice.tried[1.0] > 0.5, choice
    assert choice.strength < 1.0 and choice.wer <= choice.base_wer + validate.WER_MARGIN, choice


def test_knn_by_label_takes_neighbours_of_the_same_phone() -> None:
    keys = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    key_labels = np.array([0, 0, 0, 1, 1, 1], dtype=np.int16)
    query = np.array([[0.05], [0.05], [9.0]])
    # The second query is near phone 0's keys but is phone 1: phone 1's keys answer it.
    near = conversion.knn_mean_by_label(query, np.array([0, 1, -1]), keys, key_labels, 2)
    np.testing.assert_allclose(near[:, 0], [0.05, 5.05, 5.15], atol=1e-6)


def test_frame_labels_follow_the_phone_timings() -> None:
    phones = [Timing("h", 0.0, 0.02), Timing("iy", 0.02, 0.05), Timing("zz", 0.05, 0.06)]
    labels = conversion.frame_labels(phones, 14, ["h", "iy"])
    # 5 ms frames: h covers frames 0-3, iy 4-9, an unknown phone and the rest are -1.
    assert labels.tolist() == [0] * 4 + [1] * 6 + [-1] * 4


def test_phone_offsets_are_shrunk_towards_the_mean_of_all() -> None:
    values = np.array([1.0] * 20 + [0.0] * 60)
    labels = np.array([0] * 20 + [1] * 60)
    got = conversion.phone_offsets(values, labels, 3)
    overall = 0.25
    k = conversion.PROSODY_SHRINK
    np.testing.assert_allclose(
        got, [(20 + k * overall) / (20 + k), (k * overall) / (60 + k), overall, overall]
    )


def test_each_phone_gets_the_targets_level_and_pitch_on_it(lj_profile: Path) -> None:
    conv = VoiceProfile.load(lj_profile).conversion
    voice = ClonedVoice.load(lj_profile, _models_dir())
    (base,) = voice.base.speak(["The rain in Spain stays mainly in the plain."])
    frames = world.analyse(base.audio)
    labels = conversion.frame_labels(base.phonemes, len(frames.coded), conv.phones)
    flat = dataclasses.replace(
        conv,
        phone_level=np.zeros_like(conv.phone_level),
        phone_pitch=np.zeros_like(conv.phone_pitch),
    )
    ey = conv.phones.index("ey")  # "rain", "Spain", "stays", "mainly", "plain"
    up = dataclasses.replace(
        flat,
        phone_level=np.where(np.arange(len(flat.phone_level)) == ey, 0.5, 0.0),
        phone_pitch=np.where(np.arange(len(flat.phone_pitch)) == ey, 0.2, 0.0),
    )
    a, b = flat.convert(frames, labels=labels), up.convert(frames, labels=labels)
    # Well inside an "ey" (clear of the smoothing at its edges), voiced: exactly the offsets.
    inside = np.convolve(labels == ey, np.ones(conversion.PROSODY_SMOOTH), "same") == (
        conversion.PROSODY_SMOOTH
    )
    inside &= a.f0 > 0
    assert inside.sum() > 20
    np.testing.assert_allclose(b.f0[inside] / a.f0[inside], np.exp(0.2), rtol=1e-9)
    np.testing.assert_allclose(
        b.coded[inside, 0] - a.coded[inside, 0], 0.5 * conv.tgt_std[0], rtol=1e-9
    )
    # Far from any "ey", nothing changes; the spectral shape never does.
    far = np.convolve(labels == ey, np.ones(3 * conversion.PROSODY_SMOOTH), "same") == 0
    assert far.sum() > 20
    np.testing.assert_array_equal(b.f0[far], a.f0[far])
    np.testing.assert_array_equal(b.coded[:, 1:], a.coded[:, 1:])
    # The level keeps the base voice's contour, in the target's range: no offsets, no change
    # in shape (correlation 1 with the base voice's c0).
    assert np.corrcoef(a.coded[:, 0], frames.coded[:, 0])[0, 1] == pytest.approx(1.0)


def test_old_profiles_load_without_the_new_fields(lj_profile: Path, tmp_path: Path) -> None:
    conv = VoiceProfile.load(lj_profile).conversion
    one = conv.member_weights()[0]
    np.savez(
        tmp_path / "old.npz",
        src_mean=conv.src_mean,
        src_std=conv.src_std,
        tgt_mean=conv.tgt_mean,
        tgt_std=conv.tgt_std,
        logf0=np.array([*conv.src_logf0, *conv.tgt_logf0]),
        pool=conv.pool,
        **{f"w{i}": a for i, a in enumerate(one)},
    )
    old = conversion.Conversion.load(tmp_path / "old.npz")
    assert old.members == 1 and old.strength == 1.0 and old.phones == []
    assert len(old.phone_level) == len(old.phone_pitch) == 0
    frames = world.analyse(_lj("LJ001-0002"))
    out = old.convert(frames)
    assert out.coded.shape == frames.coded.shape and np.isfinite(out.coded).all()
    # Without per-phone prosody the level is the base voice's own, as such profiles spoke.
    np.testing.assert_array_equal(out.coded[:, 0], frames.coded[:, 0])


def test_world_keeps_the_time_axis() -> None:
    x = _lj("LJ001-0002")
    y = world.synthesise(world.analyse(x))
    assert len(y) == len(x)

    # Energy envelopes line up (no shift): correlation of 10 ms frame levels.
    def env(a: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(a[: len(a) // 160 * 160].reshape(-1, 160) ** 2, axis=1))

    assert np.corrcoef(env(x), env(y))[0, 1] > 0.9


def test_k_weighting_matches_bs1770_at_48k() -> None:
    b, a = loudness._biquad(48_000, "shelf")
    np.testing.assert_allclose(
        b, [1.53512485958697, -2.69169618940638, 1.19839281085285], rtol=1e-9
    )
    np.testing.assert_allclose(a, [1.0, -1.69065929318241, 0.73248077421585], rtol=1e-9)
    # A 1 kHz full-scale sine reads -3.01 LUFS (the standard's calibration point).
    t = np.arange(48_000 * 3) / 48_000
    assert loudness.integrated_loudness(np.sin(2 * np.pi * 1000 * t), 48_000) == pytest.approx(
        -3.01, abs=0.05
    )


def test_text_errors(lj_profile: Path) -> None:
    voice = ClonedVoice.load(lj_profile, _models_dir(), CloneSettings(max_text_chars=40))
    with pytest.raises(InvalidRequest, match="empty"):
        voice.say("  ... ")
    with pytest.raises(InvalidRequest, match="at most 40"):
        voice.say("word " * 20)


def test_silence_is_refused_as_no_speech() -> None:
    with pytest.raises(InvalidVoiceSample, match="no speech") as info:
        train([np.zeros(RATE * 15, np.float32)], _models_dir())
    assert info.value.reason == "no_speech"


def test_music_is_refused() -> None:
    # A melody of harmonic notes with vibrato: loud, tonal, not speech.
    rng = np.random.default_rng(0)
    notes = []
    for f in rng.choice([220, 247, 262, 294, 330, 349, 392, 440], size=30):
        t = np.arange(int(0.5 * RATE)) / RATE
        phase = 2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 5 * t)
        tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * np.exp(-2 * t)
        notes.append(0.3 * tone)
    with pytest.raises(InvalidVoiceSample, match="music") as info:
        train([np.concatenate(notes).astype(np.float32)], _models_dir())
    assert info.value.reason == "music"


def test_under_ten_seconds_of_speech_is_refused() -> None:
    clips = [_lj("LJ001-0002"), _lj("LJ001-0008")]
    with pytest.raises(InvalidVoiceSample, match="at least 10 s") as info:
        train(clips, _models_dir())
    assert info.value.reason == "too_short"


def test_cli_say_writes_audio_and_timings(lj_profile: Path, tmp_path: Path) -> None:
    import json

    from scipy.io import wavfile

    from doppel.__main__ import main

    out, timings = tmp_path / "out.wav", tmp_path / "t.json"
    rc = main(
        [
            "say",
            "--voice",
            str(lj_profile),
            "--text",
            "It has never been surpassed.",
            "--out",
            str(out),
            "--timings",
            str(timings),
        ]
    )
    assert rc == 0
    rate, audio = wavfile.read(out)
    assert rate == RATE and len(audio) > RATE
    words = [w["word"].lower() for w in json.loads(timings.read_text())["words"]]
    assert words == ["it", "has", "never", "been", "surpassed"]
