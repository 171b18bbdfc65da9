"""`voice` and `voice_stream`: text spoken in a replica's cloned voice.

No ONNX graph in the models cache: every voice profile brings its own `voice.onnx` (the
conversion's MLP, written and parity-checked by `VoiceProfile.save`) in its folder; the Python
backend keeps LRU caches of the profiles and of their ONNX Runtime sessions
(`doppel.voice.serving`). The base voice (Piper "joe" on ONNX Runtime, or Festival "slt") runs
in-process in the same model, and WORLD analysis, the kNN blend, F0 mapping and resynthesis in
numpy. The specs only generate the configs.
"""

from __future__ import annotations

from pathlib import Path

from doppel.voice import world
from export.registry import Built, ModelExport
from export.spec import ModelSpec, TensorSpec

_INPUTS = (TensorSpec("TEXT", "bytes", (1,)), TensorSpec("VOICE", "bytes", (1,)))
_OUTPUTS = (
    TensorSpec(
        "AUDIO",
        "float32",
        ("samples",),
        min={"samples": 1},
        opt={"samples": 3 * world.RATE},
        max={"samples": 600 * world.RATE},
    ),
    TensorSpec("TIMINGS", "bytes", (1,)),
    TensorSpec("SAMPLE_RATE", "int32", (1,)),
)
_PARAMETERS = {"max_replicas": "16", "threads": "1", "warm_base_voices": "true"}
_NOTES = {
    "instance_group": (
        "One instance on the 2-core target: a request is sequential work (base voice, WORLD\n"
        "analysis, the MLP on ONNX Runtime, kNN, WORLD synthesis), one core each step.\n"
        "GPU target: stays on the Python backend (the MLP is tiny; WORLD is CPU code)."
    ),
    "parameters": (
        "Per-voice weights, as talking_head's per-replica ones: LRU caches of loaded profiles\n"
        "and of ONNX Runtime sessions of their voice.onnx inside this one model (max_replicas;\n"
        "env DOPPEL_REPLICA_CACHE or DOPPEL_REPLICA_CACHE_<MODEL> replaces it), keyed by file,\n"
        "loaded on first use and reloaded when a voice is trained again. One config serves\n"
        "every voice; nothing writes to or polls the repository.\n"
        "threads: ONNX Runtime intra-op threads for the MLP (1: a few ms a sentence).\n"
        "warm_base_voices: start Piper and Festival at load and speak a word with each, so\n"
        "the first request does not pay for it."
    ),
    "model_warmup": (
        "No warm-up request: it would need a trained voice profile, and none exists when Triton\n"
        "starts (the base voices are warmed in initialize instead, see warm_base_voices). Each\n"
        "voice's first request loads its profile and session; later requests reuse them."
    ),
}

SPEC = ModelSpec(
    name="voice",
    description=(
        "Cloned speech: TEXT (UTF-8) and VOICE, a voice profile's absolute folder (UTF-8 bytes,\n"
        "written by `python -m doppel voice train`) -> AUDIO, 16 kHz mono float32, loudness-\n"
        "normalised; SAMPLE_RATE; TIMINGS, a JSON document {sample_rate, words, phonemes,\n"
        "sentences:[{text, start, end, words, phonemes}]} (seconds). The profile's base voice\n"
        "speaks, WORLD analyses, VOICE/voice.onnx maps the spectra, WORLD resynthesises."
    ),
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    max_batch_size=4,
    max_queue_delay_us=2000,
    parameters=_PARAMETERS,
    tensorrt=False,
    warmup=False,
    notes={
        **_NOTES,
        "max_batch_size": (
            "Requests are queued together by the dynamic batcher; execute() speaks them one\n"
            "after the other (lengths and voices differ)."
        ),
    },
)

STREAM_SPEC = ModelSpec(
    name="voice_stream",
    description=(
        "Streaming cloned speech (decoupled): the same inputs and outputs as `voice`, one\n"
        "response per sentence as soon as it is converted (its TIMINGS: {text, start, end,\n"
        "words, phonemes}, seconds from the start of the whole text), then an empty final\n"
        "response. Sentences are faded at their edges, so played back to back they are the\n"
        "`voice` audio with no clicks at the joins. gRPC streaming only."
    ),
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    max_batch_size=0,
    decoupled=True,
    parameters=_PARAMETERS,
    tensorrt=False,
    warmup=False,
    notes=_NOTES,
)


def _no_graph(models_dir: Path) -> Built:
    raise RuntimeError("voice serves each profile's own voice.onnx; no shared graph")


EXPORT = ModelExport(spec=SPEC, build=_no_graph, onnx=False)
STREAM_EXPORT = ModelExport(spec=STREAM_SPEC, build=_no_graph, onnx=False)
