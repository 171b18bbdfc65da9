"""Text-to-speech with a Piper (VITS) voice on ONNX Runtime: the logic behind Triton's `tts` and
`tts_stream` models, with per-word timings taken from the model's own durations.

Text is normalised and split into sentences (one ONNX run each, so long text streams sentence by
sentence and memory stays bounded). Phonemes come from the `espeak-ng` program and are mapped to
the voice's `phoneme_id_map` exactly as Piper does (BOS, then each phoneme followed by PAD, then
EOS; clause punctuation kept as a phoneme). The graph served here is the shipped one with its
duration tensor (`Ceil` of the duration predictor, in frames of `HOP_LENGTH` samples) exposed as
a second output (`export/tts.py`), so every phoneme's start and end in the audio is known.

This module never imports Triton: `model_repository/tts*/1/model.py` adapt it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.errors import InvalidRequest
from doppel.platform.sessions import open_session
from doppel.settings import CPU_PROVIDERS
from doppel.voice.phonemes import (
    CLAUSE_END,
    phoneme_ids,
    phonemize_sentence,
    speakable,
)

#: VITS decoder upsampling: audio samples per duration frame (Piper's `hop_length`).
HOP_LENGTH = 256
#: Piper's special symbols: padding after every phoneme, beginning and end of sentence.
#: Longest text one request may carry (about 10 minutes of speech); longer is a client error.
MAX_TEXT_CHARS = 10_000
#: A sentence longer than this is cut at clause punctuation (else whitespace): one VITS run's
#: memory and the stream's time to first audio grow with it.
MAX_SENTENCE_CHARS = 300
#: Clause punctuation Piper keeps as phonemes (followed by a space, as espeak's terminators are).
#: Abbreviations whose period does not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e inc ltd co no fig approx dept".split()
)
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": ", ",
        "\u2014": ", ",
        "\u2026": "...",
        "[": "(",
        "]": ")",
        "{": "(",
        "}": ")",
    }
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z0-9])")


@dataclasses.dataclass(frozen=True)
class SynthesisOptions:
    """VITS sampling knobs; None takes the voice's own default."""

    #: Variance of the latent noise (prosody/timbre variation); 0 is deterministic.
    noise_scale: float | None = None
    #: Speaking slowness: 1.0 normal, 1.2 slower.
    length_scale: float | None = None
    #: Variance of the duration predictor's noise; 0 is deterministic.
    noise_w: float | None = None


#: Same text, same audio: for tests and parity checks.
DETERMINISTIC = SynthesisOptions(noise_scale=0.0, noise_w=0.0)


@dataclasses.dataclass(frozen=True)
class Voice:
    """A Piper voice's `.onnx.json`: what the phonemizer and the graph need."""

    phoneme_id_map: dict[str, list[int]]
    sample_rate: int
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float

    @classmethod
    def load(cls, path: Path) -> Voice:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        inference = cfg.get("inference", {})
        return cls(
            phoneme_id_map={k: list(v) for k, v in cfg["phoneme_id_map"].items()},
            sample_rate=int(cfg["audio"]["sample_rate"]),
            espeak_voice=cfg.get("espeak", {}).get("voice", "en-us"),
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
        )

    def scales(self, options: SynthesisOptions) -> np.ndarray:
        """The graph's `scales` input: [noise_scale, length_scale, noise_w]."""
        pick = [
            (options.noise_scale, self.noise_scale),
            (options.length_scale, self.length_scale),
            (options.noise_w, self.noise_w),
        ]
        return np.array([d if v is None else v for v, d in pick], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Timing:
    """A word (or phoneme) and when it is heard, in seconds from the start of the audio."""

    text: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class SentenceAudio:
    """One sentence's audio and timings; `offset_s` places it in the whole utterance."""

    text: str
    audio: np.ndarray
    sample_rate: int
    offset_s: float
    words: list[Timing]
    phonemes: list[Timing]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def timings(self) -> dict[str, Any]:
        """JSON-ready timings (absolute seconds, rounded to the millisecond)."""
        return {
            "text": self.text,
            "start": round(self.offset_s, 3),
            "end": round(self.offset_s + self.duration_s, 3),
            "words": [_timing_dict(t, "word") for t in self.words],
            "phonemes": [_timing_dict(t, "phoneme") for t in self.phonemes],
        }


def _timing_dict(t: Timing, key: str) -> dict[str, Any]:
    return {key: t.text, "start": round(t.start, 3), "end": round(t.end, 3)}


@dataclasses.dataclass(frozen=True)
class Speech:
    """A whole utterance: the sentences' audio back to back."""

    sentences: list[SentenceAudio]
    sample_rate: int

    @property
    def audio(self) -> np.ndarray:
        if not self.sentences:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([s.audio for s in self.sentences])

    @property
    def words(self) -> list[Timing]:
        return [w for s in self.sentences for w in s.words]

    def timings(self) -> dict[str, Any]:
        words = [w for s in self.sentences for w in s.timings()["words"]]
        return {
            "sample_rate": self.sample_rate,
            "words": words,
            "sentences": [s.timings() for s in self.sentences],
        }


# ---- text -------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Unicode compatibility forms, plain quotes and dashes, no control characters, single spaces.

    Square brackets become parentheses: `[[...]]` is raw-phoneme input to espeak-ng.
    """
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    text = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in text)
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Normalised text cut at sentence ends (not after abbreviations), long ones cut further."""
    text = normalize_text(text)
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].rstrip("\"')")
        last = before.rsplit(" ", 1)[-1].rstrip(".").lower()
        if last in ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            continue  # "Dr. Smith", "J. Smith"
        pieces.append(text[start : match.start()])
        start = match.end()
    pieces.append(text[start:])
    out: list[str] = []
    for piece in pieces:
        out.extend(_cut_long(piece.strip(), max_chars))
    return [s for s in out if speakable(s)]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    middle = len(sentence) // 2
    cuts = [m.start() for m in CLAUSE_END.finditer(sentence)] or [
        m.start() for m in re.finditer(r"\s+", sentence)
    ]
    if not cuts:
        return [sentence]
    cut = min(cuts, key=lambda i: abs(i - middle))
    return _cut_long(sentence[:cut].strip(), max_chars) + _cut_long(
        sentence[cut:].strip(), max_chars
    )


def request_from_tensors(
    get: Callable[[str], np.ndarray | None],
) -> tuple[str, SynthesisOptions]:
    """(text, options) from a model request's tensors, `get(name)` giving each (None if absent).

    Shared by the `tts` and `tts_stream` adapters so both read a request the same way.
    """
    raw = get("TEXT")
    text = raw.reshape(-1)[0] if raw is not None else ""
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)

    def scale(name: str) -> float | None:
        tensor = get(name)
        return None if tensor is None else float(tensor.reshape(-1)[0])

    return text, SynthesisOptions(scale("NOISE_SCALE"), scale("LENGTH_SCALE"), scale("NOISE_W"))


# ---- synthesis --------------------------------------------------------------------------------
class TextToSpeech:
    """A loaded voice: `synthesize` for whole text, `stream` for one sentence at a time.

    `onnx_path` is the graph with durations exposed (`export/tts.py`); the shipped graph works
    too, without word timings.
    """

    def __init__(
        self,
        onnx_path: Path,
        voice_config: Path,
        *,
        threads: int = 1,
        providers: Sequence[str] = CPU_PROVIDERS,
    ) -> None:
        self.voice = Voice.load(voice_config)
        self._session = open_session(onnx_path, threads=threads, providers=providers)
        self._outputs = [o.name for o in self._session.get_outputs()]

    @classmethod
    def from_models_dir(
        cls, models_dir: Path, voice: str, onnx: str, *, threads: int = 1
    ) -> TextToSpeech:
        """The graph at `models_dir/onnx` (exported) with the config of weight package `voice`."""
        from doppel.platform import weights

        folder = weights.model_dir(models_dir, voice)
        return cls(models_dir / onnx, next(folder.glob("*.onnx.json")), threads=threads)

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    def sentences(self, text: str) -> list[str]:
        """The sentences `text` is spoken as; `InvalidRequest` when there is nothing to say."""
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest(
                f"The text is {len(text)} characters long; send at most {MAX_TEXT_CHARS} per "
                "request (split it into several requests)."
            )
        sentences = split_sentences(text)
        if not sentences:
            raise InvalidRequest("The text is empty: give at least one word to speak.")
        return sentences

    def run(
        self, ids: list[int], options: SynthesisOptions
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Audio and samples per phoneme id (None with the shipped graph) for one id sequence."""
        result = self._session.run(
            self._outputs,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": self.voice.scales(options),
            },
        )
        audio = np.asarray(result[0], dtype=np.float32).reshape(-1)
        frames = result[1].reshape(-1) if len(result) > 1 else None
        return audio, None if frames is None else frames.astype(np.int64) * HOP_LENGTH

    def synthesize_sentence(
        self, sentence: str, options: SynthesisOptions = SynthesisOptions(), offset_s: float = 0.0
    ) -> SentenceAudio:
        ph = phonemize_sentence(sentence, self.voice.espeak_voice)
        ids, first = phoneme_ids(ph.phonemes, self.voice.phoneme_id_map)
        audio, samples = self.run(ids, options)
        audio = np.clip(audio, -1.0, 1.0)
        words: list[Timing] = []
        phonemes: list[Timing] = []
        if samples is not None:
            rate = self.voice.sample_rate
            # A phoneme lasts from its first id to the next phoneme's (its PAD included), as in
            # Piper's own alignments.
            edges = np.concatenate([[0], np.cumsum(samples)])
            starts = [f for f in first if f >= 0] + [len(ids) - 1]
            span: dict[int, tuple[float, float]] = {}
            k = 0
            for i, p in enumerate(ph.phonemes):
                if first[i] < 0:
                    continue
                t0 = offset_s + edges[starts[k]] / rate
                t1 = offset_s + edges[starts[k + 1]] / rate
                k += 1
                if not p.isspace():
                    phonemes.append(Timing(p, t0, t1))
                owner = ph.owners[i]
                if owner is not None:
                    s0, s1 = span.get(owner, (t0, t1))
                    span[owner] = (min(s0, t0), max(s1, t1))
            words = [Timing(ph.words[i], *span[i]) for i in sorted(span)]
        return SentenceAudio(sentence, audio, self.voice.sample_rate, offset_s, words, phonemes)

    def stream(
        self, text: str, options: SynthesisOptions = SynthesisOptions()
    ) -> Iterator[SentenceAudio]:
        """One `SentenceAudio` per sentence, in order, timed from the start of the utterance."""
        offset = 0.0
        for sentence in self.sentences(text):
            part = self.synthesize_sentence(sentence, options, offset)
            offset += part.duration_s
            yield part

    def synthesize(self, text: str, options: SynthesisOptions = SynthesisOptions()) -> Speech:
        return Speech(list(self.stream(text, options)), self.voice.sample_rate)
