"""The strength of a voice's conversion, chosen at training time so its words stay clear.

A mapping learned from little speech (Obama's 18 s) is unsure: at full strength it smears
sounds together and Whisper hears a third of the words wrong, while a weaker conversion (part of
the base voice's own spectral shape kept) loses little similarity (held-out Obama: strength 0.7
cost 0.01 similarity and cut the WER from 41 % to 11 %). So training has the new voice read
sentences it never trained on, has Whisper transcribe them, and keeps the strongest conversion
whose word error rate stays within `WER_MARGIN` of the base voice's own on the same sentences.
No held-out speech of the person is needed: only the text of what was said.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.voice import conversion, world
from doppel.voice.base_voices import BaseVoice
from doppel.voice.enrol import Transcriber, local_transcriber

#: Harvard sentences (IEEE 1969, lists 1 and 2): phonetically balanced, no numbers, never in
#: any training or evaluation set of ours. Sixteen (about 130 words): with eight, one reading's
#: WER wandered by +-0.04 around its mean, as much as the differences it has to tell apart.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
)
#: Strengths tried, strongest first; the first that keeps words clear is kept.
STRENGTHS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
#: Word error rate a conversion may add to the base voice's own: about 13 of these 130 words.
#: Harvard sentences are hard to hear (little context), and one reading is noisy: the margin
#: is there to catch a conversion that smears words (Obama at full strength: +0.50), not to
#: trade a word or two of similarity (LJ Speech at full strength: +0.08 here, and 7.5 % WER
#: on its held-out benchmark sentences).
WER_MARGIN = 0.10
#: Silence between the sentences read to Whisper in one piece.
GAP_S = 0.4


@dataclasses.dataclass(frozen=True)
class Choice:
    strength: float
    base_wer: float
    wer: float
    #: WER at each strength tried, strongest first.
    tried: dict[float, float]

    def as_json(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "base_wer": round(self.base_wer, 4),
            "wer": round(self.wer, 4),
            "tried": {f"{s:.2f}": round(w, 4) for s, w in self.tried.items()},
            "sentences": len(SENTENCES),
        }


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level edit distance (substitutions, insertions, deletions)."""
    d = list(range(len(hypothesis) + 1))
    for i, rw in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    r = words(reference)
    return word_edits(r, words(hypothesis)) / max(1, len(r))


def choose_strength(
    conv: conversion.Conversion,
    base: BaseVoice,
    models_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
    sentences: Sequence[str] = SENTENCES,
    stt: Transcriber | None = None,
) -> Choice:
    """Set `conv.strength` to the strongest of `STRENGTHS` whose Whisper WER on `sentences`
    is within `WER_MARGIN` of the base voice's (the weakest tried where none is). `stt` is
    Whisper (Triton's `stt` on the platform); None: in-process.
    """
    whisper = stt if stt is not None else local_transcriber(models_dir)
    reference = " ".join(sentences)
    gap = np.zeros(int(GAP_S * world.RATE), dtype=np.float32)

    def heard(pieces: Sequence[np.ndarray]) -> float:
        audio = np.concatenate([x for p in pieces for x in (p.astype(np.float32), gap)])
        text = whisper.transcribe(audio, language="en", beam_size=5)["text"]
        return word_error_rate(reference, text)

    spoken = base.speak(list(sentences))
    frames = [world.analyse(s.audio) for s in spoken]
    labels = [
        conversion.frame_labels(s.phonemes, len(f.coded), conv.phones) if conv.phones else None
        for s, f in zip(spoken, frames, strict=True)
    ]
    base_wer = heard([s.audio for s in spoken])
    tried: dict[float, float] = {}
    for strength in STRENGTHS:
        conv.strength = strength
        tried[strength] = heard(
            [
                world.synthesise(conv.convert(f, labels=lab))
                for f, lab in zip(frames, labels, strict=True)
            ]
        )
        progress(
            f"conversion strength {strength:.2f}: WER {tried[strength]:.3f} "
            f"(base voice {base_wer:.3f})"
        )
        if tried[strength] <= base_wer + WER_MARGIN:
            break
    return Choice(conv.strength, base_wer, tried[conv.strength], tried)
