"""Text-to-speech speed on ONNX Runtime (Piper voice 'joe'): real-time factor, i.e. seconds of
synthesis per second of audio, for one sentence end to end (espeak-ng + VITS) and for the graph
alone."""

import pytest

from doppel.voice.phonemes import phoneme_ids, phonemize_sentence
from doppel.voice.tts import DETERMINISTIC, TextToSpeech

SENTENCE = "Could you please send me the quarterly report before Friday afternoon?"
PARAGRAPH = (
    "Good morning, everyone. Today we will talk about three things. First, the schedule. "
    "Second, the budget. And finally, the plan for next year."
)


@pytest.fixture(scope="module", params=[1, 2], ids=lambda n: f"{n}thread")
def tts(request, models_dir):
    return TextToSpeech.from_models_dir(
        models_dir, "piper-joe", "onnx/tts.onnx", threads=request.param
    )


@pytest.mark.parametrize("text", [SENTENCE, PARAGRAPH], ids=["sentence", "paragraph"])
def test_tts_synthesize(benchmark, tts, text):
    speech = benchmark.pedantic(
        tts.synthesize, args=(text, DETERMINISTIC), rounds=5, iterations=1, warmup_rounds=1
    )
    audio_s = len(speech.audio) / speech.sample_rate
    benchmark.extra_info["audio_s"] = round(audio_s, 3)
    benchmark.extra_info["real_time_factor"] = benchmark.stats["mean"] / audio_s
    assert speech.words


def test_tts_graph_only(benchmark, tts):
    ph = phonemize_sentence(SENTENCE, tts.voice.espeak_voice)
    ids, _ = phoneme_ids(ph.phonemes, tts.voice.phoneme_id_map)
    audio, samples = benchmark.pedantic(
        tts.run, args=(ids, DETERMINISTIC), rounds=5, iterations=1, warmup_rounds=1
    )
    assert samples is not None and samples.sum() == len(audio)
    audio_s = len(audio) / tts.sample_rate
    benchmark.extra_info["audio_s"] = round(audio_s, 3)
    benchmark.extra_info["real_time_factor"] = benchmark.stats["mean"] / audio_s
