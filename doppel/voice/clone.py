"""Cloned synthesis: text -> the replica's voice, with word and phoneme timings.

Each sentence is spoken by the profile's base voice, analysed by WORLD, converted frame by frame
and resynthesised. WORLD keeps the frame grid, so the converted sentence has exactly the base
sentence's length and the base voice's timings are the cloned audio's timings. Sentences are
loudness-normalised one by one (EBU R128-style target) and faded at their edges, so a whole
script (`say`) is the streamed sentences (`stream`) back to back: one path, no clicks at joins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from doppel.errors import InvalidRequest
from doppel.voice import base_voices, conversion, loudness, mapping, world
from doppel.voice.profile import VoiceProfile, onnx_session
from doppel.voice.tts import MAX_TEXT_CHARS, SentenceAudio, Speech, Timing

#: Fade at each sentence's edges: WORLD's first and last frames can start mid-waveform.
FADE_S = 0.01


@dataclasses.dataclass(frozen=True)
class CloneSettings:
    """What a deployment may change; built once per entry point and passed down."""

    max_text_chars: int = MAX_TEXT_CHARS
    target_lufs: float = loudness.TARGET_LUFS


class ClonedVoice:
    """A loaded voice profile that speaks text.

    `base` reuses an already running base voice (a server shares one per name); `map_coded`
    runs the conversion's MLP (the profile's `voice.onnx`) instead of numpy.
    """

    def __init__(
        self,
        profile: VoiceProfile,
        models_dir: Path,
        settings: CloneSettings = CloneSettings(),
        *,
        base: base_voices.BaseVoice | None = None,
        map_coded: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.profile = profile
        self.settings = settings
        self.base = (
            base if base is not None else base_voices.by_name(profile.base_voice, models_dir)
        )
        self.map_coded = map_coded

    @classmethod
    def load(
        cls, folder: Path, models_dir: Path, settings: CloneSettings = CloneSettings()
    ) -> ClonedVoice:
        """The profile in `folder`, its MLP run by ONNX Runtime from `voice.onnx` (what Triton
        runs, so both speak alike) or, for a profile saved without it, by numpy.
        """
        profile = VoiceProfile.load(folder)
        session = onnx_session(folder)
        mapper = None if session is None else mapping.onnx_mapper(session)
        return cls(profile, models_dir, settings, map_coded=mapper)

    @property
    def sample_rate(self) -> int:
        return world.RATE

    def sentences(self, text: str) -> list[str]:
        """The sentences `text` is spoken as; `InvalidRequest` for empty or too long text."""
        if len(text) > self.settings.max_text_chars:
            raise InvalidRequest(
                f"The text is {len(text)} characters long; send at most "
                f"{self.settings.max_text_chars} per request (split it into several requests)."
            )
        sentences = base_voices.sentences_of(text)
        if not sentences:
            raise InvalidRequest("The text is empty: give at least one word to speak.")
        return sentences

    def convert(self, base: SentenceAudio) -> np.ndarray:
        """The base voice's sentence in the replica's voice: same length, same time axis."""
        frames = world.analyse(base.audio)
        conv = self.profile.conversion
        labels = (
            conversion.frame_labels(base.phonemes, len(frames.coded), conv.phones)
            if conv.phones
            else None
        )
        audio = world.synthesise(conv.convert(frames, self.map_coded, labels))
        audio = loudness.normalize(audio, world.RATE, self.settings.target_lufs)
        fade = min(int(FADE_S * world.RATE), len(audio) // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            audio[:fade] *= ramp
            audio[-fade:] *= ramp[::-1]
        return audio

    def stream(self, text: str, *, batch: bool = False) -> Iterator[SentenceAudio]:
        """One converted sentence at a time, timed from the start of the utterance.

        `batch` has the base voice speak every sentence in one call (one Festival process for a
        whole script) before the first is converted; the conversion is the same.
        """
        sentences = self.sentences(text)
        spoken = (
            iter(self.base.speak(sentences))
            if batch
            else (self.base.speak([s])[0] for s in sentences)
        )
        offset = 0.0
        for sentence, base in zip(sentences, spoken, strict=True):
            audio = self.convert(base)
            yield SentenceAudio(
                sentence,
                audio,
                world.RATE,
                offset,
                [Timing(w.text, w.start + offset, w.end + offset) for w in base.words],
                [Timing(p.text, p.start + offset, p.end + offset) for p in base.phonemes],
            )
            offset += len(audio) / world.RATE

    def say(self, text: str) -> Speech:
        return Speech(list(self.stream(text, batch=True)), world.RATE)
