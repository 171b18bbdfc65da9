"""Text-to-speech: the `tts` and `tts_stream` Triton models, checked by ear (Whisper through the
`stt` model) and by clock (Whisper's word timestamps against the timings the voice reports).

Pure text handling is tested without Triton; everything else goes through the session's Triton.
"""

from __future__ import annotations

import difflib
import re

import numpy as np
import pytest
from scipy.signal import resample_poly

from doppel.audio.media import SPEECH_RATE, Audio
from doppel.audio.stt import SpeechToText, SttOptions
from doppel.errors import InferenceFailed
from doppel.platform import weights
from doppel.settings import Settings
from doppel.triton import TritonClient
from doppel.voice.phonemes import BOS, EOS, PAD, phoneme_ids, phonemize_sentence, split_clauses
from doppel.voice.tts import normalize_text, split_sentences

#: Varied sentences: statements, questions, exclamations, commas, contractions, names; the first
#: four are LJ Speech transcripts.
SENTENCES = [
    "Printing differs from most if not from all the arts and crafts represented in the exhibition.",
    "For although the Chinese took impressions from wood blocks engraved in relief for centuries.",
    "It has never been surpassed.",
    "And it is worth mention in passing that, as an example of fine typography, it stands alone.",
    "Could you please send me the quarterly report before Friday afternoon?",
    "What a wonderful surprise to see you here tonight!",
    "The weather was cold, so we stayed inside and read books by the fire.",
    "She doesn't think the train will arrive on time, but I'm hopeful.",
    "Doctor Johnson explained the results of the experiment to the committee.",
    "Bright yellow flowers grew along the narrow path behind the old house.",
]
LONG_TEXT = (
    "Good morning, everyone. Today we will talk about three things. First, the schedule! "
    "Second, the budget? And finally, the plan for next year."
)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()


def _wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hypothesis)] / max(len(reference), 1)


def _to_16k(audio: Audio) -> Audio:
    # 16000 / 22050 = 320 / 441
    assert audio.rate == 22050
    return Audio(resample_poly(audio.samples, 320, 441).astype(np.float32), SPEECH_RATE)


@pytest.fixture
async def triton(settings: Settings):
    client = TritonClient(settings.triton_grpc_url)
    yield client
    await client.close()


# ---- pure logic ---------------------------------------------------------------------------------
def test_sentences_split_at_sentence_ends_not_abbreviations() -> None:
    text = "Hello there, Dr. Smith!  It is late.\nIs it?  \u201cYes,\u201d she said\u2026 Bye"
    assert split_sentences(text) == [
        "Hello there, Dr. Smith!",
        "It is late.",
        "Is it?",
        '"Yes," she said...',
        "Bye",
    ]
    assert split_sentences(" ... \n\t ") == []
    assert normalize_text("a [[b]]\u00a0c") == "a ((b)) c"


def test_long_sentence_is_cut_at_clause_punctuation() -> None:
    sentence = ", ".join(["the long and winding road goes on"] * 20) + "."
    parts = split_sentences(sentence)
    assert len(parts) > 1 and all(len(p) <= 300 for p in parts)
    assert " ".join(parts) == sentence


def test_phoneme_ids_follow_piper() -> None:
    """BOS PAD, each phoneme followed by PAD, then EOS; clause punctuation kept as a phoneme."""
    assert split_clauses("Well, yes; it is!") == [("Well", ","), ("yes", ";"), ("it is", "!")]
    ph = phonemize_sentence("Well, yes.", "en-us")
    assert ph.words == ["Well", "yes"]
    assert "".join(ph.phonemes) == "wˈɛl, jˈɛs."
    id_map = {BOS: [1], PAD: [0], EOS: [2], "a": [14], "b": [15]}
    assert phoneme_ids(["a", "?", "b"], id_map) == ([1, 0, 14, 0, 15, 0, 2], [2, -1, 4])


# ---- through Triton ----------------------------------------------------------------------------
async def test_tts_is_understood_and_its_word_timings_match_whisper(
    triton: TritonClient, settings: Settings
) -> None:
    whisper = SpeechToText(
        weights.model_dir(settings.models_dir, "whisper-base"), SttOptions(cpu_threads=1)
    )
    references: list[str] = []
    hypotheses: list[str] = []
    offsets: list[float] = []
    for sentence in SENTENCES:
        audio, timings = await triton.synthesize(sentence, noise_scale=0.0, noise_w=0.0)
        assert audio.rate == timings["sample_rate"] == 22050
        assert 1.0 < audio.duration_s < 12.0 and np.abs(audio.samples).max() > 0.1
        speech = _to_16k(audio)
        doc = await triton.transcribe(speech, language="en")
        references += _words(sentence)
        hypotheses += _words(doc["text"])
        # Word boundaries: Whisper's word timestamps against the voice's own durations.
        ours = timings["words"]
        assert [w["word"] for w in ours] == [w.strip(".,!?") for w in sentence.split()]
        assert all(0 <= w["start"] < w["end"] <= audio.duration_s + 1e-3 for w in ours)
        heard = [
            w
            for s in whisper.transcribe(speech.samples, language="en", word_timestamps=True)[
                "segments"
            ]
            for w in s["words"]
        ]
        a = [" ".join(_words(w["word"])) for w in ours]
        b = [" ".join(_words(w["word"])) for w in heard]
        for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
            for k in range(block.size):
                mine, theirs = ours[block.a + k], heard[block.b + k]
                offsets += [abs(mine["start"] - theirs["start"]), abs(mine["end"] - theirs["end"])]
    wer = _wer(references, hypotheses)
    mean_offset = float(np.mean(offsets))
    print(
        f"\ntts -> stt WER {wer:.1%} over {len(SENTENCES)} sentences; "
        f"word boundaries vs Whisper: mean {mean_offset * 1000:.0f} ms over "
        f"{len(offsets)} boundaries"
    )
    assert wer <= 0.10
    assert len(offsets) >= 0.8 * 2 * len(references)
    assert mean_offset <= 0.100


async def test_long_text_is_spoken_sentence_by_sentence(triton: TritonClient) -> None:
    audio, timings = await triton.synthesize(LONG_TEXT, noise_scale=0.0, noise_w=0.0)
    sentences = timings["sentences"]
    assert [s["text"] for s in sentences] == split_sentences(LONG_TEXT)
    assert len(sentences) == 5
    # Back to back, covering the whole audio; every word inside its sentence.
    assert sentences[0]["start"] == 0.0
    for a, b in zip(sentences, sentences[1:], strict=False):
        assert abs(a["end"] - b["start"]) < 1e-3
    assert abs(sentences[-1]["end"] - audio.duration_s) < 1e-3
    for s in sentences:
        assert all(s["start"] <= w["start"] < w["end"] <= s["end"] + 1e-3 for w in s["words"])
    assert [w["word"] for w in timings["words"]][:3] == ["Good", "morning", "everyone"]


async def test_stream_sends_one_response_per_sentence_that_add_up_to_tts(
    triton: TritonClient,
) -> None:
    whole, timings = await triton.synthesize(LONG_TEXT, noise_scale=0.0, noise_w=0.0)
    parts = [p async for p in triton.synthesize_stream(LONG_TEXT, noise_scale=0.0, noise_w=0.0)]
    assert len(parts) == len(timings["sentences"]) == 5
    assert [t["text"] for _, t in parts] == [s["text"] for s in timings["sentences"]]
    streamed = np.concatenate([a.samples for a, _ in parts])
    assert streamed.shape == whole.samples.shape
    np.testing.assert_allclose(streamed, whole.samples, atol=1e-4)
    assert [w for _, t in parts for w in t["words"]] == timings["words"]


async def test_leaving_a_stream_early_cancels_it(triton: TritonClient) -> None:
    async for _audio, first in triton.synthesize_stream(LONG_TEXT + " " + LONG_TEXT):
        assert first["text"] == "Good morning, everyone."
        break
    audio, _ = await triton.synthesize("Still here.")
    assert audio.duration_s > 0.3


@pytest.mark.parametrize("text", ["", "   ", "... !?"])
async def test_text_with_nothing_to_say_is_a_clear_error(triton: TritonClient, text: str) -> None:
    with pytest.raises(InferenceFailed, match="The text is empty"):
        await triton.synthesize(text)
    with pytest.raises(InferenceFailed, match="The text is empty"):
        async for _ in triton.synthesize_stream(text):
            pass
