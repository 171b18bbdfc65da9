"""Enrolment: the target's speech, checked, cut into transcribed utterances, and embedded.

A voice can only be learned from enough clean speech with correct transcripts (the transcripts
drive the parallel data: a misheard word mis-aligns its frames), so this module is also where
unusable training audio is refused, with a message that says what to record instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from doppel.audio import vad
from doppel.audio.media import SILENCE_DBFS, SPEECH_RATE, Audio, decode_audio
from doppel.errors import InvalidVoiceSample
from doppel.platform import weights

#: Least speech a voice is learned from: under this the kNN pool lacks whole phoneme classes.
MIN_SPEECH_S = 10.0
#: Speech beyond this is not used: more costs training time and the pool's memory (a training
#: video yields about a minute).
MAX_SPEECH_S = 90.0
#: Audio that sounds (above the silence level) yet holds less speech than this is music or noise.
MIN_SPEECH_FOR_SOUND_S = 1.0
#: Whisper segments longer than this are not used as one utterance (DTW memory grows with the
#: square of the length).
MAX_UTTERANCE_S = 20.0


class Transcriber(Protocol):
    """Whisper as enrolment uses it: `{text, segments: [{start, end, text}]}` of 16 kHz audio."""

    def transcribe(
        self, samples: np.ndarray, *, language: str | None = None, beam_size: int | None = None
    ) -> dict[str, Any]: ...


def local_transcriber(models_dir: Path) -> Transcriber:
    """Whisper base in this process (CTranslate2, one thread): where no Triton runs."""
    from doppel.audio.stt import SpeechToText, SttOptions

    return SpeechToText(weights.model_dir(models_dir, "whisper-base"), SttOptions(cpu_threads=1))


@dataclasses.dataclass(frozen=True)
class Utterance:
    """A piece of the target's speech at 16 kHz and what is said in it."""

    samples: np.ndarray
    text: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SPEECH_RATE


def load(sources: Sequence[Path | np.ndarray]) -> list[np.ndarray]:
    """16 kHz mono samples of each source: a path to any audio or video file, or samples."""
    out = []
    for src in sources:
        if isinstance(src, np.ndarray):
            out.append(np.asarray(src, dtype=np.float32).reshape(-1))
        else:
            out.append(asyncio.run(decode_audio(Path(src))).samples)
    return out


def speech_seconds(clips: Sequence[np.ndarray], models_dir: Path) -> float:
    """Seconds of speech Silero VAD finds in the clips."""
    detector = vad.SileroVad(weights.model_dir(models_dir, "silero-vad") / "silero_vad.onnx")
    total = 0.0
    for clip in clips:
        total += sum(s.end - s.start for s in vad.segments(detector.probabilities(clip)))
    return total


def check_speech(clips: Sequence[np.ndarray], models_dir: Path) -> float:
    """Seconds of speech in the clips; `InvalidVoiceSample` when a voice cannot be learned."""
    sounding = sum(len(c) for c in clips if Audio(c, SPEECH_RATE).rms_dbfs > SILENCE_DBFS)
    speech = speech_seconds(clips, models_dir)
    if speech < MIN_SPEECH_FOR_SOUND_S:
        if sounding / SPEECH_RATE >= MIN_SPEECH_FOR_SOUND_S:
            raise InvalidVoiceSample(
                "The training audio holds sound but no speech (music or noise only): record "
                f"the person talking, at least {MIN_SPEECH_S:.0f} s, without music behind.",
                "music",
            )
        raise InvalidVoiceSample(
            "The training audio holds no speech (it is silent): check the microphone and record "
            f"the person talking for at least {MIN_SPEECH_S:.0f} s.",
            "no_speech",
        )
    if speech < MIN_SPEECH_S:
        raise InvalidVoiceSample(
            f"The training audio holds {speech:.1f} s of speech; a voice needs at least "
            f"{MIN_SPEECH_S:.0f} s (about a minute sounds best): record more talking.",
            "too_short",
        )
    return speech


def utterances(
    clips: Sequence[np.ndarray],
    transcripts: Sequence[str | None] | None,
    models_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
    stt: Transcriber | None = None,
) -> list[Utterance]:
    """The clips as transcribed utterances: a given transcript is kept with its whole clip;
    otherwise Whisper (beam 5; `stt`, else in-process) transcribes and its segments cut the clip.
    """
    given = list(transcripts) if transcripts is not None else [None] * len(clips)
    if len(given) != len(clips):
        raise ValueError("give one transcript (or None) per training clip")
    out: list[Utterance] = []
    for i, (clip, text) in enumerate(zip(clips, given, strict=True)):
        if text and len(clip) / SPEECH_RATE <= MAX_UTTERANCE_S:
            out.append(Utterance(clip, text.strip()))
            continue
        if stt is None:
            stt = local_transcriber(models_dir)
        result = stt.transcribe(clip, language="en", beam_size=5)
        progress(f"transcribed clip {i + 1}/{len(clips)}: {result['text'][:60]!r}")
        for seg in result["segments"]:
            a, b = int(seg["start"] * SPEECH_RATE), int(seg["end"] * SPEECH_RATE)
            piece = clip[max(0, a - 1600) : b + 1600]  # 0.1 s margin: Whisper cuts tight
            if seg["text"] and 0.5 <= len(piece) / SPEECH_RATE <= MAX_UTTERANCE_S:
                out.append(Utterance(piece, seg["text"]))
    if not any(any(c.isalpha() for c in u.text) for u in out):
        raise InvalidVoiceSample(
            "No words could be recognised in the training audio (music or noise only?): record "
            "the person talking clearly.",
            "music",
        )
    # Keep whole utterances up to the cap, in order.
    kept: list[Utterance] = []
    total = 0.0
    for u in out:
        if total + u.duration_s > MAX_SPEECH_S and kept:
            break
        kept.append(u)
        total += u.duration_s
    return kept


class SpeakerEncoder:
    """Resemblyzer's GE2E speaker embedding (256-d, unit length) of 16 kHz speech."""

    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():
            # webrtcvad (resemblyzer's dependency) imports the deprecated pkg_resources.
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder, preprocess_wav
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._preprocess = preprocess_wav

    def embed(self, samples: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if not isinstance(samples, np.ndarray):
            samples = np.concatenate(list(samples))
        wav = self._preprocess(np.asarray(samples, dtype=np.float32), source_sr=SPEECH_RATE)
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)
