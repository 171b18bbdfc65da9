"""The voices a clone is built on: text -> 16 kHz speech with word and phoneme timings.

No zero-shot cloning weights exist here, so a replica's voice is a base voice converted frame by
frame (see `conversion.py`). Which base voice is chosen per replica matters: converting across
genders triples the word error rate (findings-voice.md), so enrolment picks the base voice whose
speaker embedding is nearest the target's. Each base voice reports the timings of what it says;
conversion keeps the time axis, so those timings are the cloned audio's too.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from doppel.audio.media import resample
from doppel.voice.tts import SentenceAudio, TextToSpeech, Timing, split_sentences
from doppel.voice.world import RATE

#: Festival's HTS voice of the CMU ARCTIC speaker "slt" (US English, female): Debian packages
#: `festival` and `festvox-us-slt-hts`.
FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"


class BaseVoice(Protocol):
    """A text-to-speech voice conversion starts from."""

    name: str

    def speak(self, sentences: Sequence[str]) -> list[SentenceAudio]:
        """One 16 kHz `SentenceAudio` per sentence, each timed from its own start."""
        ...


class PiperBase:
    """Piper "joe" (male, VITS), with the timings of its duration predictor."""

    name = "piper-joe"

    def __init__(self, models_dir: Path) -> None:
        self._tts = TextToSpeech.from_models_dir(models_dir, "piper-joe", "onnx/tts.onnx")

    def speak(self, sentences: Sequence[str]) -> list[SentenceAudio]:
        out = []
        for sentence in sentences:
            s = self._tts.synthesize_sentence(sentence)
            out.append(
                SentenceAudio(
                    s.text, resample(s.audio, s.sample_rate, RATE), RATE, 0.0, s.words, s.phonemes
                )
            )
        return out


class FestivalBase:
    """Festival's HTS "slt" (female), with the segment and word end times of its utterance.

    One Festival process is kept per instance and fed Scheme on its standard input: starting
    Festival and loading the voice costs ~0.25 s, more than a short sentence's synthesis.
    """

    name = "festival-slt"
    _END = "DOPPEL-END"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _process(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            try:
                # Line-buffered stdout (stdbuf): Festival's own buffering would hold the
                # answer back until it exits.
                self._proc = subprocess.Popen(
                    ["stdbuf", "-oL", "festival", "--pipe"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    bufsize=1,
                )
            except FileNotFoundError as exc:  # pragma: no cover - bootstrap installs it
                raise RuntimeError(
                    "festival is not installed (apt-get install festival festvox-us-slt-hts)"
                ) from exc
            self._send(f"(voice_{FESTIVAL_VOICE})")
        return self._proc

    def _send(self, script: str) -> str:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f'{script}\n(format t "{self._END}\\n")(fflush nil)\n')
        proc.stdin.flush()
        lines: list[str] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("festival stopped while speaking")
            if line.strip() == self._END:
                return "".join(lines)
            lines.append(line)

    def close(self) -> None:
        """End the Festival process (it exits at the end of its input)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()

    def __del__(self) -> None:
        self.close()

    def speak(self, sentences: Sequence[str]) -> list[SentenceAudio]:
        if not sentences:
            return []
        with self._lock, tempfile.TemporaryDirectory(prefix="doppel-festival-") as tmp:
            self._process()
            script = []
            for i, sentence in enumerate(sentences):
                text = sentence.replace("\\", " ").replace('"', "'")
                script.append(
                    f'(set! utt (utt.synth (Utterance Text "{text}")))'
                    f'(utt.save.wave utt "{tmp}/{i}.wav" \'riff)'
                    f'(format t "U {i}\\n")'
                    '(mapcar (lambda (s) (format t "S %s %f\\n" (item.name s) '
                    '(item.feat s "end"))) (utt.relation.items utt \'Segment))'
                    '(mapcar (lambda (w) (format t "W %s %f %f\\n" (item.name w) '
                    '(item.feat w "word_start") (item.feat w "word_end"))) '
                    "(utt.relation.items utt 'Word))"
                )
            timings = _parse_timings(self._send("".join(script)))
            out = []
            for i, sentence in enumerate(sentences):
                audio, rate = _read_wav(Path(tmp) / f"{i}.wav")
                words, phonemes = timings.get(i, ([], []))
                out.append(
                    SentenceAudio(sentence, resample(audio, rate, RATE), RATE, 0.0, words, phonemes)
                )
            return out


def _parse_timings(text: str) -> dict[int, tuple[list[Timing], list[Timing]]]:
    out: dict[int, tuple[list[Timing], list[Timing]]] = {}
    current: int | None = None
    last_end = 0.0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            current, last_end = int(parts[1]), 0.0
            out[current] = ([], [])
        elif current is not None and len(parts) == 3 and parts[0] == "S":
            end = float(parts[2])
            if parts[1] != "pau":
                out[current][1].append(Timing(parts[1], last_end, end))
            last_end = end
        elif current is not None and len(parts) == 4 and parts[0] == "W":
            out[current][0].append(Timing(parts[1], float(parts[2]), float(parts[3])))
    return out


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    scale = float(np.iinfo(data.dtype).max) if data.dtype.kind == "i" else 1.0
    samples = data.astype(np.float32) / scale
    return (samples.mean(axis=1) if samples.ndim > 1 else samples), int(rate)


def available(models_dir: Path) -> list[BaseVoice]:
    """Every base voice this machine can run (Festival only where it is installed)."""
    import shutil

    voices: list[BaseVoice] = [PiperBase(models_dir)]
    if shutil.which("festival"):
        voices.append(FestivalBase())
    return voices


def by_name(name: str, models_dir: Path) -> BaseVoice:
    if name == PiperBase.name:
        return PiperBase(models_dir)
    if name == FestivalBase.name:
        return FestivalBase()
    raise ValueError(f"unknown base voice {name!r}")


def sentences_of(text: str) -> list[str]:
    """Text split into the sentences a base voice speaks one at a time."""
    return [re.sub(r"\s+", " ", s) for s in split_sentences(text)]
