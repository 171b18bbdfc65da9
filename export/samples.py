"""Real speech for export-time checks: JFK from ../shared/data when present, else espeak-ng
reading a sentence (always installed by `make`), so `python -m export` works in any clone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from doppel.audio import media
from doppel.settings import REPO_ROOT

SHARED_DATA = Path(os.environ.get("DOPPEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FALLBACK_TEXT = (
    "And so, my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def speech(rate: int = media.SPEECH_RATE) -> np.ndarray:
    """About 11 seconds of real or synthesised English speech, mono float32 at `rate`."""
    jfk = SHARED_DATA / "speech" / "jfk.flac"
    if jfk.exists():
        return asyncio.run(media.decode_audio(jfk, rate)).samples
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), FALLBACK_TEXT], check=True)
        return asyncio.run(media.decode_audio(wav, rate)).samples
