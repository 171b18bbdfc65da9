"""`talking_head`: face frames rendered by each replica's own `renderer.onnx`.

No ONNX graph in the models cache: every trained replica brings its own (written by training
into the replica's folder); the Python backend keeps an LRU cache of their ONNX Runtime
sessions (`doppel.replica.serving`). The spec only generates the config.
"""

from __future__ import annotations

from pathlib import Path

from doppel.replica.layout import (
    IMAGE_SIZE,
    INPUT_CHANNELS,
    OUTPUT_CHANNELS,
    RENDERER_INPUT,
    RENDERER_ONNX,
    RENDERER_OUTPUT,
    REPLICA_INPUT,
)
from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec

#: Why the weights live in a cache inside one model (shared by `mouth_motion`'s spec).
DESIGN_NOTE = (
    "Per-replica weights: an LRU cache of ONNX Runtime sessions inside this one model\n"
    "(max_replicas; env DOPPEL_REPLICA_CACHE or DOPPEL_REPLICA_CACHE_<MODEL> replaces it),\n"
    "keyed by the replica's graph file, loaded on first use and reloaded when the file changes.\n"
    "Not one Triton model per replica loaded and unloaded through explicit model control: one\n"
    "config serves every replica, nothing writes to or polls the repository, an instance holds\n"
    "many replicas with bounded memory, and the dynamic batcher batches requests across\n"
    "callers (one ONNX Runtime run per replica in a batch)."
)

NO_WARMUP_NOTE = (
    "No warm-up: it would need a trained replica, and none exists when Triton starts. Each\n"
    "replica's first request loads its session (a cache miss); later requests reuse it."
)

SPEC = ModelSpec(
    name="talking_head",
    description=(
        "Talking-head renderer, one U-Net per replica: INPUT, the renderer's 7 conditioning\n"
        "channels of a square lower-face crop (uint8), and REPLICA, the trained replica's\n"
        "absolute folder (UTF-8 bytes, the same for every frame of a request) -> IMAGE, the\n"
        "rendered face (uint8 RGB, channels first). Runs REPLICA/renderer[.int8].onnx on ONNX\n"
        "Runtime."
    ),
    inputs=(
        TensorSpec(RENDERER_INPUT, "uint8", (INPUT_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)),
        TensorSpec(REPLICA_INPUT, "bytes", (1,)),
    ),
    outputs=(TensorSpec(RENDERER_OUTPUT, "uint8", (OUTPUT_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)),),
    max_batch_size=16,
    max_queue_delay_us=2000,
    parameters={"max_replicas": "16", "threads": "2", "precision": "int8"},
    notes={
        "max_batch_size": "Callers send one request per frame; a batch's requests are grouped\n"
        "by replica and each group runs as one ONNX Runtime call (frames concatenated).",
        "dynamic_batching": "A video renders hundreds of frames at once: 2 ms of queueing\n"
        "gathers a full batch of them for a few milliseconds of latency.",
        "instance_group": "One instance on the 2-core target; its cache holds the sessions.",
        "parameters": DESIGN_NOTE
        + "\nthreads: ONNX Runtime intra-op threads per run (2: rendering is the one heavy step\n"
        "of a video; with 1 thread it was ~31 ms a frame, the frame loop's bottleneck).\n"
        "precision: int8 serves a replica's 8-bit renderer (renderer.int8.onnx, kept by training\n"
        "only where it matches the float graph) where it has one: ~9 ms a frame instead of ~21\n"
        "on one core of this CPU (VNNI); float always runs renderer.onnx.",
        "model_warmup": NO_WARMUP_NOTE,
    },
    # Every replica has its own graph, so there is no single TensorRT plan to build; on the GPU
    # target this stays on the Python backend.
    tensorrt=False,
    warmup=False,
)


def _no_graph(models_dir: Path) -> Built:
    raise RuntimeError(f"talking_head serves each replica's own {RENDERER_ONNX}; no shared graph")


EXPORT = ModelExport(spec=SPEC, build=_no_graph, onnx=False)
