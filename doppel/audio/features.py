"""Lip-sync audio features: 16 kHz speech -> one 512-d Whisper-base encoder vector per 25 fps
video frame.

The encoder is OpenAI Whisper base's (the `openai-whisper` package supplies the architecture),
with the weights read straight from the CTranslate2 `model.bin` that speech-to-text already
uses, so the project ships one copy of Whisper. Pipeline:

    samples -> log-mel (80 x 100 per second, numpy) -> 30 s windows of 3000 mel frames
            -> encoder (1500 states per window, 50 per second)
            -> mean of adjacent state pairs (25 per second) -> the first ceil(seconds * 25)

Every window is a full 30 s window, short clips padded with silence exactly as Whisper pads
them in training and in transcription. The alternative (a window as long as the clip, the
positional embedding sliced) is 10-20x cheaper for short clips but shows the encoder inputs it
never saw in training. Measured on JFK (features of a phrase encoded alone vs the same frames
inside the whole 11 s clip, mean cosine): first 1.5 s 0.93 padded vs 0.90 sliced; first 3 s
0.94 vs 0.94 (worst frame 0.62 vs 0.80); 7-11 s 0.61 vs 0.60 (worst frame 0.36 vs -0.24).
Padding is as good or better on average, worst frames go either way; what decides it is that
padding keeps one input layout (the trained one) for every clip, which the mouth-shape models
need. Cost: a 2 s clip pays for a whole window (~0.5 s on 2 cores).

Caveat for those models: Whisper's absolute positional embedding makes a state depend on where
in its window the sound sits (the 7-11 s phrase above keeps only 0.6 cosine when moved to the
window's start). Train on features computed the way inference computes them: per utterance,
each clip starting its own window, not slices of one long recording's windows.

Frame count: ceil(samples / 640), one feature for every video frame needed to cover the audio
(the last, partial frame included), so a renderer never runs out of features.

This module never imports Triton; torch and whisper are imported only by the functions that
build the PyTorch encoder (the serving path needs numpy alone).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.platform.sessions import open_session
from doppel.settings import CPU_PROVIDERS

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160  # 10 ms mel frames
N_MELS = 80
WINDOW_FRAMES = 3000  # 30 s of mel frames: the only input length Whisper was trained on
WINDOW_SAMPLES = WINDOW_FRAMES * HOP
FPS = 25
SAMPLES_PER_FEATURE = SAMPLE_RATE // FPS  # 640: 4 mel frames, 2 encoder states
FEATURES_PER_WINDOW = WINDOW_FRAMES // 4  # 750
DIM = 512
# Whisper base's encoder shape (openai-whisper `ModelDimensions`).
N_CTX, N_HEAD, N_LAYER = 1500, 8, 6

#: 16 kHz samples -> [ceil(n / 640), 512] features (TritonClient.encode_audio fits).
Encode = Callable[[np.ndarray], Awaitable[np.ndarray]]


def feature_count(n_samples: int) -> int:
    """Features for `n_samples` of 16 kHz audio: one per 25 fps video frame that covers it."""
    return max(1, math.ceil(n_samples / SAMPLES_PER_FEATURE))


def window_count(n_samples: int) -> int:
    """30 s encoder windows needed for `n_samples`."""
    return max(1, math.ceil(feature_count(n_samples) / FEATURES_PER_WINDOW))


# --- log-mel (numpy twin of whisper.audio.log_mel_spectrogram) ---------------------------------

_FILTERS: np.ndarray | None = None


def mel_filters() -> np.ndarray:
    """Whisper's 80-band filterbank [80, 201], read from the openai-whisper package's assets
    without importing the package (which would import torch).
    """
    global _FILTERS
    if _FILTERS is None:
        spec = importlib.util.find_spec("whisper")
        if spec is None or spec.origin is None:
            raise RuntimeError("openai-whisper is not installed (it carries the mel filterbank)")
        with np.load(Path(spec.origin).parent / "assets" / "mel_filters.npz") as f:
            _FILTERS = f[f"mel_{N_MELS}"].astype(np.float32)
    return _FILTERS


def log_mel(samples: np.ndarray, padding: int = 0) -> np.ndarray:
    """Log-mel spectrogram [80, (len + padding) // 160] as Whisper computes it: periodic Hann
    STFT (reflect-padded, centred), power, mel, log10, floor 8 below the clip's peak, scaled.
    """
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    if padding:
        audio = np.concatenate([audio, np.zeros(padding, np.float32)])
    audio = np.pad(audio, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(audio) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        audio, (n_frames, N_FFT), (audio.strides[0] * HOP, audio.strides[0])
    )
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)[:-1]  # Whisper drops the last
    mel = mel_filters() @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def mel_windows(samples: np.ndarray) -> np.ndarray:
    """The encoder's input for one clip: [windows, 80, 3000], silence-padded like Whisper."""
    n = window_count(len(samples))
    # Zeros past the last window too, so its last frames' STFT sees silence, not a reflection.
    mel = log_mel(samples, padding=n * WINDOW_SAMPLES - len(samples) + N_FFT)
    mel = mel[:, : n * WINDOW_FRAMES]
    return np.ascontiguousarray(mel.reshape(N_MELS, n, WINDOW_FRAMES).transpose(1, 0, 2))


def frames_from_windows(encoded: np.ndarray, n_samples: int) -> np.ndarray:
    """[windows, 750, 512] encoder output of one clip -> its [feature_count, 512] features."""
    return np.ascontiguousarray(encoded.reshape(-1, DIM)[: feature_count(n_samples)])


def split_batches(windows_per_clip: list[int], encoded: np.ndarray) -> Iterator[np.ndarray]:
    """Cut one stacked encoder output back into each clip's windows, in order."""
    start = 0
    for n in windows_per_clip:
        yield encoded[start : start + n]
        start += n


class OnnxAudioEncoder:
    """The exported graph on ONNX Runtime, serving many clips per run: the windows of every
    clip are stacked into one batch (what Triton's dynamic batching is for) and the result is
    cut back per clip.
    """

    #: Windows per ONNX Runtime run. On 2 CPU cores a window costs the same at batch 1 or 2
    #: (~0.52 s) and more at 8 (~0.75 s: 8 heads x 1500 x 1500 attention maps per window no
    #: longer fit in cache), so bigger runs are cut into runs of 2. A GPU target would raise it.
    MAX_WINDOWS_PER_RUN = 2

    def __init__(
        self, path: Path, threads: int = 2, providers: Sequence[str] = CPU_PROVIDERS
    ) -> None:
        self.session = open_session(path, threads=threads, providers=providers)

    def run_windows(self, mel: np.ndarray) -> np.ndarray:
        """[windows, 80, 3000] -> [windows, 750, 512]."""
        step = self.MAX_WINDOWS_PER_RUN
        parts = [
            self.session.run(["FEATURES"], {"MEL": mel[i : i + step]})[0]
            for i in range(0, len(mel), step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def encode(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Each clip's [feature_count, 512] features, all clips' windows in shared runs."""
        windows = [mel_windows(c) for c in clips]
        encoded = self.run_windows(np.concatenate(windows))
        return [
            frames_from_windows(e, len(c))
            for e, c in zip(split_batches([len(w) for w in windows], encoded), clips, strict=True)
        ]


def local_encoder(models_dir: Path) -> Encode:
    """The `audio_encoder` graph in-process (tests and scripts without a platform)."""
    from doppel.platform.weights import onnx_path

    enc = OnnxAudioEncoder(onnx_path(models_dir, "audio_encoder"), threads=1)

    async def encode(samples: np.ndarray) -> np.ndarray:
        return (await asyncio.to_thread(enc.encode, [samples]))[0]

    return encode


# --- CTranslate2 weights -> PyTorch -----------------------------------------------------------

#: CTranslate2's DataType enum order (include/ctranslate2/types.h).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ctranslate2(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 `model.bin` (binary version 6) whose names start with
    `prefix`. Layout: version, spec name, revision, count, then per variable its name, rank,
    dims, dtype id, byte count and bytes; aliases last.
    """
    data = memoryview(path.read_bytes())
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = take("H")
        text = bytes(data[offset : offset + n - 1]).decode()
        offset += n
        return text

    version = take("I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported")
    string(), take("I")  # spec name, spec revision
    out = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype = _CT2_DTYPES[take("B")]
        size = take("I")
        if name.startswith(prefix):
            if dtype == "bfloat16":
                raw = np.frombuffer(data[offset : offset + size], np.uint16).astype(np.uint32)
                array = (raw << 16).view(np.float32)
            else:
                array = np.frombuffer(data[offset : offset + size], dtype).copy()
            out[name] = array.reshape(shape)
        offset += size
    return out


def encoder_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """Whisper base's encoder weights from a CTranslate2 folder, named as
    `whisper.model.AudioEncoder`'s state dict, in float32.
    """
    ct2 = read_ctranslate2(folder / "model.bin", "encoder/")
    if any(name.endswith("weight_scale") for name in ct2):
        raise ValueError(f"{folder}: int8-quantized weights; the encoder needs float weights")
    w = {k.removeprefix("encoder/"): v.astype(np.float32) for k, v in ct2.items()}
    sd = {
        "conv1.weight": w["conv1/weight"],
        "conv1.bias": w["conv1/bias"],
        "conv2.weight": w["conv2/weight"],
        "conv2.bias": w["conv2/bias"],
        "positional_embedding": w["position_encodings/encodings"],
        "ln_post.weight": w["layer_norm/gamma"],
        "ln_post.bias": w["layer_norm/beta"],
    }
    for i in range(N_LAYER):
        src, dst = f"layer_{i}/", f"blocks.{i}."
        # CTranslate2 fuses q, k, v into one projection; Whisper's key has no bias (zeros here).
        qkv_w = np.split(w[src + "self_attention/linear_0/weight"], 3)
        qkv_b = np.split(w[src + "self_attention/linear_0/bias"], 3)
        sd |= {
            dst + "attn_ln.weight": w[src + "self_attention/layer_norm/gamma"],
            dst + "attn_ln.bias": w[src + "self_attention/layer_norm/beta"],
            dst + "attn.query.weight": qkv_w[0],
            dst + "attn.query.bias": qkv_b[0],
            dst + "attn.key.weight": qkv_w[1],
            dst + "attn.value.weight": qkv_w[2],
            dst + "attn.value.bias": qkv_b[2],
            dst + "attn.out.weight": w[src + "self_attention/linear_1/weight"],
            dst + "attn.out.bias": w[src + "self_attention/linear_1/bias"],
            dst + "mlp_ln.weight": w[src + "ffn/layer_norm/gamma"],
            dst + "mlp_ln.bias": w[src + "ffn/layer_norm/beta"],
            dst + "mlp.0.weight": w[src + "ffn/linear_0/weight"],
            dst + "mlp.0.bias": w[src + "ffn/linear_0/bias"],
            dst + "mlp.2.weight": w[src + "ffn/linear_1/weight"],
            dst + "mlp.2.bias": w[src + "ffn/linear_1/bias"],
        }
        if np.abs(qkv_b[1]).max() > 0:
            raise ValueError(f"{folder}: layer {i} has a key bias; not a Whisper encoder")
    return sd


def whisper_encoder(folder: Path) -> Any:
    """`whisper.model.AudioEncoder` (base) with the CTranslate2 folder's weights, eval mode."""
    import torch
    from whisper.model import AudioEncoder

    encoder = AudioEncoder(N_MELS, N_CTX, DIM, N_HEAD, N_LAYER)
    state = {k: torch.from_numpy(v) for k, v in encoder_state_dict(folder).items()}
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def frame_encoder(folder: Path) -> Any:
    """The exported graph: mel windows [B, 80, T] -> 25 fps features [B, T / 4, 512].

    Serving always sends T = 3000 (see the module docstring); other multiples of 4 up to 3000
    run with the positional embedding sliced, which the tests use to compare the two choices.
    """
    import torch

    class FrameEncoder(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            e = self.encoder
            x = torch.nn.functional.gelu(e.conv1(mel))
            x = torch.nn.functional.gelu(e.conv2(x)).permute(0, 2, 1)
            x = x + e.positional_embedding[: x.shape[1]]
            for block in e.blocks:
                x = block(x)
            x = e.ln_post(x)
            # Two 20 ms encoder states per 40 ms video frame.
            return x.reshape(x.shape[0], -1, 2, x.shape[2]).mean(dim=2)

    return FrameEncoder(whisper_encoder(folder)).eval()


def features(module: Any, samples: np.ndarray) -> np.ndarray:
    """[feature_count, 512] features of one clip with the PyTorch `frame_encoder` (reference
    path; serving runs the same graph in ONNX Runtime).
    """
    import torch

    with torch.no_grad():
        encoded = module(torch.from_numpy(mel_windows(samples))).numpy()
    return frames_from_windows(encoded, len(samples))
