"""What each exportable model provides to `python -m export`."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.spec import ModelSpec


@dataclasses.dataclass
class Built:
    """A model ready to export: the PyTorch module (None when the source is already ONNX),
    a sample to trace with, and real inputs for the parity check.
    """

    module: Any | None
    sample: Mapping[str, np.ndarray]
    check: Mapping[str, np.ndarray]
    #: Where the graph comes from when there is no PyTorch module (a shipped ONNX file);
    #: `transform` may rewrite it (e.g. expose an intermediate tensor as an output).
    onnx_source: Path | None = None
    transform: Callable[[Path, Path], None] | None = None
    #: Reference outputs when `module` is None (e.g. the upstream runtime's own answer).
    reference: Mapping[str, np.ndarray] | None = None
    #: What `reference` is, for the parity report.
    reference_name: str = "PyTorch"


@dataclasses.dataclass(frozen=True)
class ModelExport:
    spec: ModelSpec
    #: build(models_dir) -> Built
    build: Callable[[Path], Built]
    atol: float = 1e-4
    rtol: float = 1e-3
    #: Models served from a Python backend with no ONNX graph of their own in the models cache
    #: (stt: CTranslate2; talking_head, mouth_motion: each replica's graphs).
    onnx: bool = True


#: model name -> module in export/ that defines `EXPORT: ModelExport` ("module:NAME" when one
#: module defines several).
MODULES = {
    "stt": "export.stt",
    "audio_encoder": "export.audio_encoder",
    "tts": "export.tts",
    # The streaming (decoupled) twin of `tts`: same graph, its own config.
    "tts_stream": "export.tts:STREAM_EXPORT",
    "vad": "export.vad",
    "speech_features": "export.speech_features",
    # Per-replica graphs (each replica's folder), from an LRU cache of sessions in the model.
    "talking_head": "export.talking_head",
    "mouth_motion": "export.mouth_motion",
    # Cloned speech: each voice profile's voice.onnx, from LRU caches in the model.
    "voice": "export.voice",
    "voice_stream": "export.voice:STREAM_EXPORT",
}


def load(name: str) -> ModelExport:
    if name not in MODULES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODULES))}")
    module, _, attr = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "EXPORT")  # type: ignore[no-any-return]
