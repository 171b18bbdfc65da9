"""Whisper speech-to-text on CTranslate2 (faster-whisper): the logic behind Triton's `stt` model.

This module never imports Triton: `model_repository/stt/1/model.py` adapts it, and tests call it
directly too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio.media import SPEECH_RATE


@dataclasses.dataclass(frozen=True)
class SttOptions:
    #: CTranslate2 quantisation: int8 runs base at ~0.1x real time on 2 CPU cores.
    compute_type: str = "int8"
    #: Beam 5 is Whisper's own default and what quality.md's WER uses; beam 1 halves latency.
    beam_size: int = 5
    cpu_threads: int = 2


class SpeechToText:
    """A loaded Whisper model; `transcribe` takes 16 kHz mono float32 samples."""

    def __init__(self, model_dir: Path, options: SttOptions | None = None) -> None:
        from faster_whisper import WhisperModel

        self.options = options or SttOptions()
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=self.options.compute_type,
            cpu_threads=self.options.cpu_threads,
            num_workers=1,
        )

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        language: str | None = None,
        beam_size: int | None = None,
        word_timestamps: bool = False,
    ) -> dict[str, Any]:
        """Transcribe one clip; returns `{text, language, duration_s, segments}`."""
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        segments, info = self._model.transcribe(
            samples,
            language=language or None,
            beam_size=beam_size or self.options.beam_size,
            word_timestamps=word_timestamps,
            # Whisper hallucinates on long stretches of silence; the condition on previous text
            # makes that loop worse, so each window is decoded on its own.
            condition_on_previous_text=False,
        )
        out_segments = []
        for seg in segments:
            item: dict[str, Any] = {
                "start": round(float(seg.start), 3),
                "end": round(float(seg.end), 3),
                "text": seg.text.strip(),
            }
            if word_timestamps and seg.words:
                item["words"] = [
                    {
                        "start": round(float(w.start), 3),
                        "end": round(float(w.end), 3),
                        "word": w.word.strip(),
                        "probability": round(float(w.probability), 3),
                    }
                    for w in seg.words
                ]
            out_segments.append(item)
        return {
            "text": " ".join(s["text"] for s in out_segments).strip(),
            "language": info.language,
            "duration_s": round(len(samples) / SPEECH_RATE, 3),
            "segments": out_segments,
        }
