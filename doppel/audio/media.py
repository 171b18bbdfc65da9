"""Media decoding with ffmpeg: any container or codec ffmpeg reads, to model-ready arrays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from doppel.errors import InvalidMedia

#: Sample rate every speech model in Doppel takes (Whisper, silero-vad).
SPEECH_RATE = 16_000
#: Below this RMS level (dBFS) a whole clip counts as silent. Room tone in a quiet recording sits
#: around -60 to -70 dBFS; quiet speech averages above -40 dBFS.
SILENCE_DBFS = -55.0
#: Shortest audio worth sending to a model.
MIN_DURATION_S = 0.1


@dataclasses.dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at `rate` Hz."""

    samples: np.ndarray
    rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    @property
    def rms_dbfs(self) -> float:
        if len(self.samples) == 0:
            return -math.inf
        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return 20 * math.log10(rms) if rms > 0 else -math.inf


async def decode_audio(source: Path | bytes, rate: int = SPEECH_RATE) -> Audio:
    """Decode the first audio stream of `source` (a path, or the bytes of a file) to mono float32.

    Raises `InvalidMedia` with a person-readable reason when ffmpeg cannot read it or it holds
    no audio.
    """
    if isinstance(source, bytes):
        # A file, not a pipe: MP4s with their index at the end need a seekable input.
        with tempfile.NamedTemporaryFile(prefix="doppel-upload-") as tmp:
            tmp.write(source)
            tmp.flush()
            return await decode_audio(Path(tmp.name), rate)
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source)]
    args += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        text = err.decode(errors="replace")
        if "matches no streams" in text:
            raise InvalidMedia("The file has no audio track.")
        reason = text.strip().splitlines()
        detail = reason[-1] if reason else f"ffmpeg exited with {proc.returncode}"
        raise InvalidMedia(f"The file could not be read as audio ({detail}).")
    samples = np.frombuffer(out, dtype=np.float32).copy()
    if len(samples) == 0:
        raise InvalidMedia("The file has an audio track but it holds no samples.")
    return Audio(samples=samples, rate=rate)


def require_speech_candidate(audio: Audio) -> None:
    """Reject audio no speech model can use: too short, or silent throughout."""
    if audio.duration_s < MIN_DURATION_S:
        raise InvalidMedia(
            f"The audio is {audio.duration_s:.2f} s long; at least {MIN_DURATION_S} s is needed."
        )
    level = audio.rms_dbfs
    if level < SILENCE_DBFS:
        shown = "-inf" if math.isinf(level) else f"{level:.0f}"
        raise InvalidMedia(
            f"The audio is silent (average level {shown} dBFS, below {SILENCE_DBFS:.0f} dBFS): "
            "check the microphone or the file."
        )


def audio_duration(path: Path) -> float:
    """Seconds of the first audio stream of `path`, read by ffprobe (no decoding).

    Raises `InvalidMedia` when ffprobe cannot read the file or it has no audio stream (a text
    file, a JPEG, a silent video).
    """
    args = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    proc = subprocess.run([*args, str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        detail = lines[-1] if lines else f"ffprobe exited with {proc.returncode}"
        raise InvalidMedia(f"The file is not audio: ffmpeg cannot read it ({detail}).")
    doc = json.loads(proc.stdout or "{}")
    audios = [s for s in doc.get("streams", []) if s.get("codec_type") == "audio"]
    if not audios:
        raise InvalidMedia("The file is not audio: it has no audio track.")
    for value in (audios[0].get("duration"), doc.get("format", {}).get("duration")):
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    raise InvalidMedia("The file is not audio that can be used: its duration is unknown.")


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling (e.g. TTS at 22.05 kHz -> models at 16 kHz)."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)
