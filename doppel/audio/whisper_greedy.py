"""Whisper greedy decoding over any runtime: the loop behind the GPU `stt` (TensorRT engines).

CPU serving uses CTranslate2 (`doppel.audio.stt`). On a GPU, the whisper_trt approach
runs the encoder and the decoder as two TensorRT engines and drives the token loop from Python;
this module is that loop, written against two callables so PyTorch, ONNX Runtime and TensorRT
all run it, and so it is tested here on the CPU with the PyTorch modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Whisper's decoder context is 448 tokens; half of it is its own limit for one window's text.
MAX_NEW_TOKENS = 224

Encode = Callable[[np.ndarray], np.ndarray]  # mel [1, 80, 3000] -> states [1, 1500, 512]
Decode = Callable[[np.ndarray, np.ndarray], np.ndarray]  # tokens [1, T], states -> logits [1, V]


def tokenizer(model_dir: Path, language: str = "en") -> object:
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(
        tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json")),
        multilingual=True,
        task="transcribe",
        language=language,
    )


def transcribe_window(mel: np.ndarray, encode: Encode, decode: Decode, tok: object) -> str:
    """Greedy decoding of one 30 s mel window, without timestamps."""
    states = encode(mel)
    tokens = [*tok.sot_sequence, tok.no_timestamps]  # type: ignore[attr-defined]
    prompt = len(tokens)
    for _ in range(MAX_NEW_TOKENS):
        logits = decode(np.array([tokens], dtype=np.int64), states)
        nxt = int(np.argmax(logits[0]))
        if nxt == tok.eot:  # type: ignore[attr-defined]
            break
        tokens.append(nxt)
    text = tok.decode([t for t in tokens[prompt:] if t < tok.eot])  # type: ignore[attr-defined]
    return str(text).strip()
