"""Triton Python-backend adapter for `doppel.audio.features` (the logic lives there)."""

import json
import os
import sys
from pathlib import Path

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.audio.features import OnnxAudioEncoder  # noqa: E402
from doppel.platform import weights  # noqa: E402
from doppel.platform.weights import onnx_path  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        models_dir = Path(os.environ["DOPPEL_MODELS_DIR"])
        weights.model_dir(models_dir, params["weights"])  # the graph's source, verified
        self.encoder = OnnxAudioEncoder(
            onnx_path(models_dir, "audio_encoder"), threads=int(params["threads"])
        )

    def execute(self, requests):
        clips, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
            if audio.size == 0:
                responses[i] = _error("audio_encoder: AUDIO is empty")
            else:
                clips.append((i, audio))
        if clips:
            try:
                # All requests' windows in shared ONNX Runtime runs: what dynamic batching buys.
                features = self.encoder.encode([audio for _, audio in clips])
            except Exception as exc:  # the whole batch failed: say so on each request
                features = [None] * len(clips)
                error = f"audio_encoder: {exc}"
            for (i, _), out in zip(clips, features, strict=True):
                if out is None:
                    responses[i] = _error(error)
                else:
                    responses[i] = pb_utils.InferenceResponse(
                        [pb_utils.Tensor("FEATURES", out[None])]
                    )
        return responses

    def finalize(self):
        self.encoder = None


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
