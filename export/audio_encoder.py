"""`audio_encoder`: 16 kHz speech -> 25 fps Whisper-base encoder features (lip-sync input).

Served model and graph differ: Triton takes raw AUDIO per request and returns FEATURES per
request; model.py computes the log-mel windows (numpy, `doppel.audio.features`), stacks the
30 s windows of every request of a batch into ONE run of the ONNX graph, and cuts the result
back per request. The graph is `audio_features.frame_encoder` traced with its own IO
(`GRAPH_SPEC`: MEL [windows, 80, 3000] -> FEATURES [windows, 750, 512]); parity compares ONNX
Runtime with that PyTorch module on real speech (JFK, LJ Speech).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import numpy as np

from doppel.audio import features as af
from doppel.audio import media
from doppel.platform import weights
from export.registry import Built, ModelExport
from export.samples import SHARED_DATA, speech
from export.spec import ModelSpec, TensorSpec

WEIGHTS = "whisper-base"
#: A short real sentence (1.9 s) beside JFK's 11 s, so the check covers a mostly padded window.
LJ_CLIP = SHARED_DATA / "speech" / "ljspeech" / "wavs" / "LJ001-0002.wav"

SPEC = ModelSpec(
    name="audio_encoder",
    description=(
        "Lip-sync audio features: Whisper base's encoder (weights from the CTranslate2 stt\n"
        "checkpoint) on onnxruntime in the Python backend. Input: AUDIO, 16 kHz mono float32\n"
        "samples. Output: FEATURES [ceil(samples / 640), 512], one vector per 25 fps video\n"
        "frame (mean of two 20 ms encoder states). Audio is encoded in 30 s windows, short\n"
        "clips padded with silence as Whisper was trained (see doppel/audio/features.py)."
    ),
    inputs=(
        TensorSpec(
            "AUDIO",
            "float32",
            ("samples",),
            min={"samples": 640},
            opt={"samples": 176_000},
            max={"samples": 16_000 * 600},
            ragged=True,
        ),
    ),
    outputs=(
        TensorSpec(
            "FEATURES",
            "float32",
            ("frames", af.DIM),
            min={"frames": 1},
            opt={"frames": 275},
            max={"frames": 15_000},
        ),
    ),
    max_batch_size=8,
    max_queue_delay_us=5000,
    parameters={"weights": WEIGHTS, "threads": "2"},
    notes={
        "max_batch_size": (
            "Requests of any length share a batch (AUDIO is ragged): execute() stacks the 30 s\n"
            "windows of all of them into one ONNX Runtime run and splits the result."
        ),
        "dynamic_batching": (
            "One 30 s window costs ~0.5 s on 2 cores, so waiting 5 ms for company is free;\n"
            "it lets concurrent callers (speech_features, the renderer) share a run."
        ),
        "instance_group": (
            "One instance with 2 intra-op threads: the machine has 2 cores; a second instance\n"
            "would only split them. GPU target: stays on the Python backend (the served model\n"
            "computes log-mel windows around the graph; the graph itself is TensorRT-ready)."
        ),
    },
    tensorrt=False,
)

#: The traced graph's own IO (batch = windows); drives its ONNX names and dynamic axes.
GRAPH_SPEC = ModelSpec(
    name="audio_encoder_graph",
    inputs=(TensorSpec("MEL", "float32", (af.N_MELS, af.WINDOW_FRAMES)),),
    outputs=(TensorSpec("FEATURES", "float32", (af.FEATURES_PER_WINDOW, af.DIM)),),
    max_batch_size=64,
)


def check_clips() -> list[np.ndarray]:
    """Real speech for parity and tests: JFK (or the espeak fallback) and, when the shared data
    is present, a short LJ Speech sentence.
    """
    clips = [speech()]
    if LJ_CLIP.exists():
        clips.append(asyncio.run(media.decode_audio(LJ_CLIP)).samples)
    return clips


def build(models_dir: Path) -> Built:
    module = af.frame_encoder(weights.model_dir(models_dir, WEIGHTS))
    check = {"MEL": np.concatenate([af.mel_windows(c) for c in check_clips()])}
    reference = GRAPH_SPEC.torch_outputs(module, check)
    traced = Path(tempfile.mkdtemp(prefix="doppel-audio-encoder-")) / "graph.onnx"
    GRAPH_SPEC.export_onnx(module, {"MEL": check["MEL"][:1]}, traced)
    return Built(
        module=None,
        sample=check,
        check=check,
        onnx_source=traced,
        transform=_move,
        reference=reference,
    )


def _move(source: Path, target: Path) -> None:
    shutil.move(source, target)  # /tmp and the models cache may be different filesystems
    source.parent.rmdir()


# ONNX Runtime and PyTorch differ by float32 rounding only: ~1e-4 on features up to ~10.
EXPORT = ModelExport(spec=SPEC, build=build, atol=2e-3, rtol=2e-4)
