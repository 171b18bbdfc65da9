"""Turn-taking (doppel.live.turns): when the person starts speaking and when they have finished,
from VAD probabilities as the audio arrives. Exact boundaries on constructed probabilities
(each chunk's samples carry its index, so the turn's audio can be checked sample for sample),
the same turns however the stream is cut, and real speech: JFK, with the probabilities from
Triton's `vad` model, sent as a live call would (20 ms frames, VAD every 256 ms)."""

from __future__ import annotations

import numpy as np
import pytest

from doppel.audio import media, vad
from doppel.live import turns
from doppel.settings import Settings
from doppel.triton import TritonClient
from tests.conftest import shared_file

STEP = vad.CHUNK / vad.RATE


def chunks_of(n: int) -> np.ndarray:
    """n chunks of samples, each chunk filled with its own index."""
    return np.repeat(np.arange(n, dtype=np.float32), vad.CHUNK)


def test_a_turn_starts_after_sustained_speech_and_ends_after_sustained_silence() -> None:
    o = turns.TurnOptions()
    # 10 silent, a 3-chunk click (96 ms < start_s), 10 silent, 20 speech, 5 uncertain (between
    # the thresholds: neither), 30 silent, then 12 speech to the end of the stream.
    probs = np.array(
        [0.0] * 10 + [0.9] * 3 + [0.0] * 10 + [0.9] * 20 + [0.4] * 5 + [0.0] * 30 + [0.9] * 12
    )
    samples = chunks_of(len(probs))
    detector = turns.TurnDetector(o)
    events = detector.push(samples, probs) + detector.flush()
    assert [e.kind for e in events] == ["speech_started", "turn_ended"] * 2
    first_start, first_end, second_start, second_end = events
    assert first_start.at_s == pytest.approx(23 * STEP)  # the click started nothing
    assert first_end.at_s == pytest.approx(48 * STEP)  # uncertain chunks keep the turn
    pre = round(o.pre_roll_s / STEP)
    audio = first_end.audio
    assert audio is not None and len(audio) == (48 - (23 - pre)) * vad.CHUNK
    assert audio[0] == 23 - pre and audio[-1] == 47  # pre-roll included, trailing silence not
    assert second_start.at_s == pytest.approx(78 * STEP)
    # Flushed at the stream's end; its pre-roll is the previous turn's trailing silence.
    assert second_end.at_s == pytest.approx(90 * STEP) and second_end.audio[0] == 78 - pre


def test_noise_and_short_turns_say_nothing_of_an_answer() -> None:
    # 8 speech chunks (0.26 s): long enough to start (the replica stops talking), too short to
    # be a turn to answer.
    probs = np.array([0.0] * 5 + [0.9] * 8 + [0.0] * 40)
    events = turns.TurnDetector().push(chunks_of(len(probs)), probs)
    assert [e.kind for e in events] == ["speech_started"]
    quiet = np.full(200, 0.2)
    assert turns.TurnDetector().push(chunks_of(200), quiet) == []


def test_the_same_turns_however_the_stream_is_cut() -> None:
    rng = np.random.default_rng(0)
    # A random walk of speech and silence, 40 s.
    state, probs = 0.0, []
    for _ in range(1250):
        if rng.random() < 0.04:
            state = 0.9 - state
        probs.append(min(1.0, max(0.0, state + rng.normal(0, 0.1))))
    samples = chunks_of(len(probs))
    whole = turns.TurnDetector()
    want = whole.push(samples, np.array(probs)) + whole.flush()
    assert sum(e.kind == "turn_ended" for e in want) >= 5
    for trial in range(3):
        detector = turns.TurnDetector()
        got: list[turns.TurnEvent] = []
        s = p = 0
        while s < len(samples) or p < len(probs):
            # Samples in 20 ms frames of random count; probabilities lag or lead them.
            s2 = min(len(samples), s + 320 * int(rng.integers(1, 20)))
            p2 = min(len(probs), p + int(rng.integers(0, 12)))
            got += detector.push(samples[s:s2], np.array(probs[p:p2]))
            s, p = s2, p2
        got += detector.flush()
        assert [(e.kind, e.at_s) for e in got] == [(e.kind, e.at_s) for e in want], trial
        for a, b in zip(got, want, strict=True):
            if a.audio is not None:
                np.testing.assert_array_equal(a.audio, b.audio)


@pytest.fixture
async def triton(settings: Settings):
    client = TritonClient(settings.triton_grpc_url)
    yield client
    await client.close()


@pytest.mark.data
async def test_jfk_heard_as_a_live_call_sends_it(triton: TritonClient) -> None:
    """20 ms frames in, the VAD on 256 ms at a time (Triton, streaming state). JFK pauses about
    a second for effect twice ("And so, my fellow Americans ... ask not ..."): the default
    patience (0.7 s of silence) answers at each pause; a patient persona (1.2 s) hears one turn.
    """
    samples = (await media.decode_audio(shared_file("speech", "jfk.flac"))).samples
    silence = np.zeros(vad.RATE * 2, np.float32)
    audio = np.concatenate([silence, samples, silence])
    audio = audio[: len(audio) - len(audio) % vad.CHUNK]
    detectors = {
        "default": turns.TurnDetector(),
        "patient": turns.TurnDetector(turns.TurnOptions(end_silence_s=1.2)),
    }
    events: dict[str, list[turns.TurnEvent]] = {name: [] for name in detectors}
    stream, pending = vad.StreamState(), np.zeros(0, np.float32)
    for start in range(0, len(audio), 320):
        frame = audio[start : start + 320]
        pending = np.concatenate([pending, frame])
        probs = np.zeros(0, np.float32)
        if len(pending) >= 8 * vad.CHUNK or start + 320 >= len(audio):
            whole = len(pending) - len(pending) % vad.CHUNK
            probs, stream = await triton.vad(pending[:whole], stream)
            pending = pending[whole:]
        for name, detector in detectors.items():
            events[name] += detector.push(frame, probs)
    for name, detector in detectors.items():
        events[name] += detector.flush()
        print(name, [(e.kind, round(e.at_s, 2)) for e in events[name]])

    def spans(name: str) -> list[tuple[float, float]]:
        got = events[name]
        assert [e.kind for e in got] == ["speech_started", "turn_ended"] * (len(got) // 2)
        return [(a.at_s, b.at_s) for a, b in zip(got[::2], got[1::2], strict=True)]

    # JFK speaks from ~0.32 s to ~10.6 s of the clip: 2 s later here.
    default, patient = spans("default"), spans("patient")
    assert len(default) == 3 and len(patient) == 1
    assert 2.1 <= default[0][0] <= 2.7 and 12.2 <= default[-1][1] <= 13.1
    assert patient == [(default[0][0], default[-1][1])]
    for (_, end), (start, _) in zip(default, default[1:], strict=False):
        assert 0.7 <= start - end < 1.2  # each pause: longer than default patience, not patient
    for e in events["default"]:
        if e.audio is not None:  # each turn's audio: its speech plus the pre-roll before it
            began = max(s for s, _ in default if s < e.at_s)
            want = e.at_s - began + turns.TurnOptions().pre_roll_s
            assert len(e.audio) / vad.RATE == pytest.approx(want, abs=0.04)
