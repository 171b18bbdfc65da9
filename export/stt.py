"""`stt`: Whisper base on CTranslate2 (faster-whisper) in the Python backend.

No ONNX graph on the CPU target (CTranslate2 serves the checkpoint as it is); the spec still
generates the config. The GPU target is `python -m export.stt_trt` (TensorRT engines).
"""

from __future__ import annotations

from pathlib import Path

from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="stt",
    description=(
        "Speech-to-text: Whisper base (CTranslate2, int8) via faster-whisper in the Python\n"
        "backend. Input: 16 kHz mono float32 samples. Output: one JSON document per request\n"
        "({text, language, duration_s, segments:[{start,end,text}]})."
    ),
    inputs=(
        TensorSpec(
            "AUDIO",
            "float32",
            ("samples",),
            min={"samples": 1600},
            opt={"samples": 16_000},
            max={"samples": 16_000 * 600},
            ragged=True,
        ),
        TensorSpec("LANGUAGE", "bytes", (1,), optional=True),
        TensorSpec("BEAM_SIZE", "int32", (1,), optional=True),
    ),
    outputs=(TensorSpec("TRANSCRIPT", "bytes", (1,)),),
    max_batch_size=8,
    max_queue_delay_us=5000,
    parameters={
        "weights": "whisper-base",
        "compute_type": "int8",
        "beam_size": "5",
        "cpu_threads": "2",
    },
    notes={
        "max_batch_size": "Requests are queued together by the dynamic batcher and handed to one\n"
        "execute() call; clips of any length share a batch (ragged input).",
        "dynamic_batching": "A short wait lets concurrent callers share one execute();\n"
        "transcription takes ~1-2 s, so 5 ms costs nothing noticeable.",
        "instance_group": "One instance: CTranslate2 already uses both cores of the 2-core\n"
        "target (cpu_threads=2); a second would only fight over them.",
    },
    tensorrt=False,  # the GPU target is export/stt_trt.py (encoder + decoder engines)
    warmup_fill="zero_data",
)


def _no_graph(models_dir: Path) -> Built:
    raise RuntimeError("stt serves the CTranslate2 checkpoint; there is no ONNX graph")


EXPORT = ModelExport(spec=SPEC, build=_no_graph, onnx=False)
