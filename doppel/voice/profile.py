"""A replica's voice profile: what enrolment learned, stored as a small folder.

`profile.json` (base voice, speaker embedding, pitch statistics, transcripts, training figures),
`conversion.npz` (the spectral mapping and the kNN pool of real target frames, ~1 MB per
minute of speech) and `voice.onnx` (the mapping's MLP, which Triton's `voice` models run; see
`mapping.export_mapping`). In-process inference needs numpy and pyworld only (ONNX Runtime
when `voice.onnx` is there; a profile saved before it existed falls back to numpy).

Every file is written to a temporary name and renamed over the old one, `profile.json` last,
so a server that caches profiles by file (inode, mtime, size) notices a retrained voice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.platform.sessions import open_session
from doppel.settings import CPU_PROVIDERS
from doppel.voice import base_voices, conversion, enrol, learning, mapping, validate, world
from doppel.voice.tts import SentenceAudio

PROFILE_JSON = "profile.json"
CONVERSION_NPZ = "conversion.npz"
#: The MLP of the conversion as ONNX (`mapping.export_mapping`): what Triton runs.
VOICE_ONNX = "voice.onnx"
FORMAT_VERSION = 1
#: Utterances each base voice speaks when enrolment picks the nearest one.
SELECTION_UTTERANCES = 3


@dataclasses.dataclass
class VoiceProfile:
    base_voice: str
    embedding: np.ndarray
    speech_s: float
    base_similarity: dict[str, float]
    transcripts: list[str]
    train_s: float
    conversion: conversion.Conversion
    #: How the conversion's strength was chosen (`validate.Choice.as_json`); empty if it was not.
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write the profile into `folder`: conversion, ONNX graph (parity-checked against
        PyTorch), then `profile.json`; each file atomically.
        """
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{CONVERSION_NPZ}.tmp.npz"
        self.conversion.save(tmp)
        os.replace(tmp, folder / CONVERSION_NPZ)
        parity = mapping.export_mapping(self.conversion, folder / VOICE_ONNX)
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "base_voice": self.base_voice,
            "rate": world.RATE,
            "frame_ms": world.FRAME_MS,
            "speech_s": round(self.speech_s, 2),
            "train_s": round(self.train_s, 1),
            "base_similarity": {k: round(v, 4) for k, v in self.base_similarity.items()},
            "log_f0": {
                "base": list(self.conversion.src_logf0),
                "target": list(self.conversion.tgt_logf0),
            },
            "embedding": [round(float(x), 6) for x in self.embedding],
            "transcripts": self.transcripts,
            "onnx": {"file": VOICE_ONNX, "max_abs_vs_pytorch": float(f"{parity:.3g}")},
            "validation": self.validation,
        }
        tmp = folder / f".{PROFILE_JSON}.tmp"
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, folder / PROFILE_JSON)

    @classmethod
    def load(cls, folder: Path) -> VoiceProfile:
        path = folder / PROFILE_JSON
        if not path.exists():
            raise FileNotFoundError(f"{folder} is not a voice profile (no {PROFILE_JSON})")
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{folder}: profile format {meta.get('format')}, expected "
                f"{FORMAT_VERSION}; train the voice again"
            )
        return cls(
            base_voice=meta["base_voice"],
            embedding=np.array(meta["embedding"], dtype=np.float32),
            speech_s=float(meta["speech_s"]),
            base_similarity=dict(meta["base_similarity"]),
            transcripts=list(meta["transcripts"]),
            train_s=float(meta["train_s"]),
            conversion=conversion.Conversion.load(folder / CONVERSION_NPZ),
            validation=dict(meta.get("validation") or {}),
        )


def export_onnx(folder: Path) -> float:
    """(Re)write `voice.onnx` of a saved profile (one saved before the graph existed);
    returns ONNX Runtime's max difference from PyTorch.
    """
    return mapping.export_mapping(VoiceProfile.load(folder).conversion, folder / VOICE_ONNX)


def onnx_session(
    folder: Path, threads: int = 1, providers: Sequence[str] = CPU_PROVIDERS
) -> Any | None:
    """An ONNX Runtime session of the profile's `voice.onnx`, or None where it has none."""
    path = folder / VOICE_ONNX
    if not path.is_file():
        return None
    return open_session(path, threads=threads, providers=providers)


def train(
    sources: Sequence[Path | np.ndarray],
    models_dir: Path,
    *,
    transcripts: Sequence[str | None] | None = None,
    options: learning.TrainOptions | None = None,
    base_voice: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    stt: enrol.Transcriber | None = None,
) -> VoiceProfile:
    """Learn a voice from speech files (audio or video) or 16 kHz sample arrays.

    `stt` transcribes (the training speech when no transcripts are given, and the validation
    reading): Triton's `stt` model on the platform (`doppel.triton.TritonTranscriber`); None:
    Whisper in this process.

    Raises `InvalidVoiceSample` for training audio with no speech, too little, or music only.
    """
    started = time.perf_counter()
    clips = enrol.load(sources)
    speech_s = enrol.check_speech(clips, models_dir)
    progress(f"{speech_s:.1f} s of speech in {len(clips)} clip(s)")
    options = options or learning.TrainOptions()
    if stt is None and (options.validate or not transcripts or not all(transcripts)):
        stt = enrol.local_transcriber(models_dir)  # one Whisper for both uses
    utts = enrol.utterances(clips, transcripts, models_dir, progress, stt)
    progress(f"{len(utts)} utterances, {sum(u.duration_s for u in utts):.1f} s")
    encoder = enrol.SpeakerEncoder()
    embedding = encoder.embed([u.samples for u in utts])
    texts = [u.text for u in utts]

    candidates = (
        [base_voices.by_name(base_voice, models_dir)]
        if base_voice
        else base_voices.available(models_dir)
    )
    scores: dict[str, float] = {}
    spoken: dict[str, list[SentenceAudio]] = {}
    for voice in candidates:
        spoken[voice.name] = voice.speak(texts[:SELECTION_UTTERANCES])
        audio = [s.audio for s in spoken[voice.name]]
        scores[voice.name] = float(encoder.embed(audio) @ embedding)
        progress(f"base voice {voice.name}: similarity {scores[voice.name]:.3f}")
    chosen = max(candidates, key=lambda v: scores[v.name])
    progress(f"base voice chosen: {chosen.name}")

    base_speech = spoken[chosen.name] + chosen.speak(texts[SELECTION_UTTERANCES:])
    base_frames = [world.analyse(s.audio) for s in base_speech]
    target_frames = [world.analyse(u.samples) for u in utts]
    progress("WORLD analysis done; learning the mapping")
    conv = learning.train(
        base_frames,
        target_frames,
        options,
        progress,
        base_phonemes=[s.phonemes for s in base_speech],
    )
    validation: dict[str, Any] = {}
    if options.validate:
        choice = validate.choose_strength(conv, chosen, models_dir, progress, stt=stt)
        validation = choice.as_json()
        progress(f"conversion strength {choice.strength:.2f} kept")
    train_s = time.perf_counter() - started
    progress(f"voice learned in {train_s:.0f} s")
    return VoiceProfile(chosen.name, embedding, speech_s, scores, texts, train_s, conv, validation)
