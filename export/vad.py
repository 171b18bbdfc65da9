"""Silero VAD: the shipped ONNX graph, checked against the shipped TorchScript model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doppel.audio.vad import CHUNK, CONTEXT
from doppel.platform import weights
from export.registry import Built, ModelExport
from export.samples import speech
from export.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="vad",
    description=(
        "Silero VAD v6: speech probability per 32 ms (512 samples at 16 kHz). Streaming: send\n"
        "STATE and CONTEXT from the previous response to continue a stream (zeros to start)."
    ),
    inputs=(
        TensorSpec(
            "AUDIO",
            "float32",
            ("samples",),
            min={"samples": 512},
            opt={"samples": 8192},
            max={"samples": 480_000},
        ),
        TensorSpec("STATE", "float32", (2, 128), optional=True),
        TensorSpec("CONTEXT", "float32", (CONTEXT,), optional=True),
    ),
    outputs=(
        TensorSpec("PROBS", "float32", ("chunks",)),
        TensorSpec("STATE_OUT", "float32", (2, 128)),
        TensorSpec("CONTEXT_OUT", "float32", (CONTEXT,)),
    ),
    max_batch_size=16,
    max_queue_delay_us=1000,
    notes={
        "max_batch_size": "Streams of equal chunk counts are stacked into one ONNX Runtime run.",
        "dynamic_batching": "Live calls send 32-256 ms of audio at a time; 1 ms of queueing lets\n"
        "concurrent calls share a run without adding noticeable latency.",
        "instance_group": "A 2 MB LSTM: one instance with one thread is plenty on 2 cores.",
    },
    # The graph branches on the sample rate (If nodes) and is tiny; it stays on the Python
    # backend on the GPU target too.
    tensorrt=False,
    parameters={"threads": "1"},
)


def build(models_dir: Path) -> Built:
    import torch

    folder = weights.model_dir(models_dir, "silero-vad")
    samples = speech()
    chunk = samples[16000 : 16000 + CHUNK][None, :]
    jit = torch.jit.load(str(folder / "silero_vad.jit"))
    jit.reset_states()
    with torch.no_grad():
        prob = jit(torch.from_numpy(chunk.copy()), 16000).numpy()
    x = np.concatenate([np.zeros((1, CONTEXT), np.float32), chunk], axis=1)
    check = {
        "input": x,
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }
    return Built(
        module=None,
        sample=check,
        check=check,
        onnx_source=folder / "silero_vad.onnx",
        reference={"output": prob},
        reference_name="TorchScript (silero_vad.jit)",
    )


EXPORT = ModelExport(spec=SPEC, build=build, atol=1e-4, rtol=1e-3)
