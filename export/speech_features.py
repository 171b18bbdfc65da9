"""`speech_features`: text -> `tts` -> `audio_encoder` in one call (a BLS model).

A BLS model rather than an ensemble: between the two models the audio is resampled from the
voice's 22.05 kHz to the encoder's 16 kHz, which an ensemble cannot do without a third model.
"""

from __future__ import annotations

from pathlib import Path

from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="speech_features",
    description=(
        "Text -> speech and its lip-sync features in one call: calls `tts`, resamples its\n"
        "22.05 kHz audio to 16 kHz, calls `audio_encoder`. Outputs the tts outputs plus\n"
        "FEATURES, 25 per second of audio (one per video frame)."
    ),
    inputs=(TensorSpec("TEXT", "bytes", (1,)),),
    outputs=(
        TensorSpec("AUDIO", "float32", ("samples",)),
        TensorSpec("SAMPLE_RATE", "int32", (1,)),
        TensorSpec("TIMINGS", "bytes", (1,)),
        TensorSpec("FEATURES", "float32", ("frames", 512)),
    ),
    max_batch_size=0,
    dynamic_batching=False,
    notes={
        "instance_group": "Two instances: while one waits on tts, the other can wait on\n"
        "the encoder; the composing models batch across them."
    },
    cpu_instances=2,
    tensorrt=False,
    warmup=False,  # its composing models warm up themselves
)


def _no_graph(models_dir: Path) -> Built:
    raise RuntimeError("speech_features has no graph of its own")


EXPORT = ModelExport(spec=SPEC, build=_no_graph, onnx=False)
