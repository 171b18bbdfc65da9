"""`mouth_motion`: mouth points from lip-sync features with each replica's own `mouth.onnx`.

No ONNX graph in the models cache: every trained replica brings its own; the Python backend
keeps an LRU cache of their ONNX Runtime sessions (`doppel.replica.serving`), as `talking_head`
does. The spec only generates the config.
"""

from __future__ import annotations

from pathlib import Path

from doppel.replica.layout import (
    FEATURE_DIM,
    MOUTH_INPUT,
    MOUTH_ONNX,
    MOUTH_OUTPUT,
    MOUTH_POINTS,
    REPLICA_INPUT,
)
from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec
from export.talking_head import DESIGN_NOTE, NO_WARMUP_NOTE

SPEC = ModelSpec(
    name="mouth_motion",
    description=(
        "Mouth motion, one small model per replica: FEATURES, lip-sync features at 25 per\n"
        "second (`audio_encoder`'s output), and REPLICA, the trained replica's absolute folder\n"
        "(UTF-8 bytes) -> POINTS, 53 mouth points (x, y) per frame. Runs REPLICA/mouth.onnx\n"
        "on ONNX Runtime."
    ),
    inputs=(
        TensorSpec(
            MOUTH_INPUT,
            "float32",
            (1, "frames", FEATURE_DIM),
            min={"frames": 1},
            opt={"frames": 250},
            max={"frames": 15_000},
        ),
        TensorSpec(REPLICA_INPUT, "bytes", (1,)),
    ),
    outputs=(TensorSpec(MOUTH_OUTPUT, "float32", (1, "frames", MOUTH_POINTS, 2)),),
    max_batch_size=0,
    dynamic_batching=False,
    parameters={"max_replicas": "64", "threads": "1"},
    notes={
        "max_batch_size": "No batching: requests carry features of different lengths, and a\n"
        "whole utterance is one request (milliseconds on a 1 MB model).",
        "instance_group": "One instance on the 2-core target; its cache holds the sessions.",
        "parameters": DESIGN_NOTE + "\nthreads: ONNX Runtime intra-op threads per run.",
        "model_warmup": NO_WARMUP_NOTE,
    },
    tensorrt=False,
    warmup=False,
)


def _no_graph(models_dir: Path) -> Built:
    raise RuntimeError(f"mouth_motion serves each replica's own {MOUTH_ONNX}; no shared graph")


EXPORT = ModelExport(spec=SPEC, build=_no_graph, onnx=False)
