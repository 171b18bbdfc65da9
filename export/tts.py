"""`tts` and `tts_stream`: the shipped Piper voice graph with its phoneme durations exposed.

The graph is not traced from PyTorch: it is the voice package's ONNX file, rewritten with the
`onnx` package so the duration predictor's `Ceil` (frames per phoneme id) is also a graph output
(`durations`); that is where word timings come from. Parity: the rewritten graph must give the
original graph's audio on real phoneme ids (noise scales 0, so both are deterministic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doppel.platform import weights
from doppel.voice.phonemes import phoneme_ids, phonemize_sentence
from doppel.voice.tts import DETERMINISTIC, Voice
from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec

VOICE = "piper-joe"
ONNX_FILE = "en_US-joe-medium.onnx"
#: Name of the exposed duration output (frames of 256 samples per phoneme id).
DURATIONS = "durations"
#: A real sentence for the parity check and the warm-up request.
CHECK_TEXT = "The quick brown fox jumps over the lazy dog, and then it rests."

_NOTES = {
    "max_batch_size": (
        "Requests are queued together by the dynamic batcher; execute() speaks them one after\n"
        "the other (VITS lengths differ, and both cores already serve one ONNX run)."
    ),
    "instance_group": (
        "One instance with 2 intra-op threads: the target machine has 2 cores.\n"
        "GPU target: stays on the Python backend (onnxruntime). The graph has RandomNormalLike\n"
        "and data-dependent shapes (the audio length is the sum of predicted durations), which\n"
        "TensorRT cannot build into a plan."
    ),
}

_SCALES = (
    TensorSpec("NOISE_SCALE", "float32", (1,), optional=True),
    TensorSpec("LENGTH_SCALE", "float32", (1,), optional=True),
    TensorSpec("NOISE_W", "float32", (1,), optional=True),
)
_OUTPUTS = (
    TensorSpec(
        "AUDIO",
        "float32",
        ("samples",),
        min={"samples": 1},
        opt={"samples": 66150},
        max={"samples": 22050 * 600},
    ),
    TensorSpec("TIMINGS", "bytes", (1,)),
    TensorSpec("SAMPLE_RATE", "int32", (1,)),
)
_PARAMETERS = {"voice": VOICE, "onnx": "onnx/tts.onnx", "threads": "2"}

SPEC = ModelSpec(
    name="tts",
    description=(
        "Text-to-speech: Piper (VITS) voice 'joe' on onnxruntime in the Python backend.\n"
        "Input: UTF-8 text (split into sentences), optional noise/length scales (0 noise is\n"
        "deterministic). Output: 22.05 kHz mono float32 audio, SAMPLE_RATE, and TIMINGS, a JSON\n"
        "document {sample_rate, words:[{word,start,end}], sentences:[...]} from the model's\n"
        "own phoneme durations."
    ),
    inputs=(TensorSpec("TEXT", "bytes", (1,)), *_SCALES),
    outputs=_OUTPUTS,
    max_batch_size=4,
    max_queue_delay_us=2000,
    parameters=_PARAMETERS,
    tensorrt=False,
    warmup_text=CHECK_TEXT,
    notes=_NOTES,
)

STREAM_SPEC = ModelSpec(
    name="tts_stream",
    description=(
        "Streaming text-to-speech (decoupled): the same voice and outputs as `tts`, one response\n"
        "per sentence as soon as it is spoken (timings absolute from the start of the text),\n"
        "then an empty final response. gRPC streaming only."
    ),
    inputs=(TensorSpec("TEXT", "bytes", (1,)), *_SCALES),
    outputs=_OUTPUTS,
    max_batch_size=0,
    decoupled=True,
    parameters=_PARAMETERS,
    tensorrt=False,
    warmup_text=CHECK_TEXT,
    notes={"instance_group": _NOTES["instance_group"]},
)


def expose_durations(source: Path, target: Path) -> None:
    """Copy the voice graph to `target` with the `Ceil` durations as output `durations`."""
    import onnx

    model = onnx.load(str(source))
    ceil = [n.output[0] for n in model.graph.node if n.op_type == "Ceil"]
    if len(ceil) != 1:
        raise ValueError(f"{source}: expected one Ceil node (VITS durations), found {len(ceil)}")
    model.graph.node.append(
        onnx.helper.make_node("Identity", [ceil[0]], [DURATIONS], name="expose_durations")
    )
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            DURATIONS, onnx.TensorProto.FLOAT, ["batch_size", 1, "phonemes"]
        )
    )
    onnx.checker.check_model(model)
    tmp = target.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.rename(target)


def check_inputs(voice: Voice) -> dict[str, np.ndarray]:
    """The graph's inputs for `CHECK_TEXT`, deterministic scales."""
    ph = phonemize_sentence(CHECK_TEXT, voice.espeak_voice)
    ids, _ = phoneme_ids(ph.phonemes, voice.phoneme_id_map)
    return {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": voice.scales(DETERMINISTIC),
    }


def build(models_dir: Path) -> Built:
    from doppel.platform.onnx_export import onnx_outputs

    folder = weights.model_dir(models_dir, VOICE)
    source = folder / ONNX_FILE
    inputs = check_inputs(Voice.load(folder / f"{ONNX_FILE}.json"))
    reference = onnx_outputs(source, inputs)
    return Built(
        module=None,
        sample=inputs,
        check=inputs,
        onnx_source=source,
        transform=expose_durations,
        reference={"output": reference["output"]},
        reference_name="the original Piper graph",
    )


EXPORT = ModelExport(spec=SPEC, build=build, atol=1e-5, rtol=1e-4)
#: The streaming model shares the `tts` graph (export `tts` first); only its config is written.
STREAM_EXPORT = ModelExport(spec=STREAM_SPEC, build=build, onnx=False)
