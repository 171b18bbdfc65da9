"""Triton Python-backend adapter for `doppel.audio.vad` (the logic lives there)."""

import json
import os
import sys
from pathlib import Path

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.audio.vad import CONTEXT, STATE_SHAPE, SileroVad  # noqa: E402
from doppel.platform.weights import onnx_path  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        models_dir = Path(os.environ["DOPPEL_MODELS_DIR"])
        self.vad = SileroVad(onnx_path(models_dir, "vad"), threads=int(params.get("threads", 1)))

    def execute(self, requests):
        # Requests with the same length run as one batch; Triton only groups equal shapes here.
        parsed, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
                state = _optional(request, "STATE", (1, *STATE_SHAPE))
                context = _optional(request, "CONTEXT", (1, CONTEXT))
                parsed.append(
                    (
                        i,
                        audio.reshape(1, -1),
                        state.reshape(1, *STATE_SHAPE),
                        context.reshape(1, CONTEXT),
                    )
                )
            except Exception as exc:
                responses[i] = _error(exc)
        groups = {}
        for item in parsed:
            groups.setdefault(item[1].shape[1], []).append(item)
        for items in groups.values():
            try:
                probs, state, ctx = self.vad.run_batch(
                    np.concatenate([a for _, a, _, _ in items]),
                    np.concatenate([s for _, _, s, _ in items]),
                    np.concatenate([c for _, _, _, c in items]),
                )
            except Exception as exc:
                for i, *_ in items:
                    responses[i] = _error(exc)
                continue
            for row, (i, *_rest) in enumerate(items):
                responses[i] = pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("PROBS", probs[row : row + 1]),
                        pb_utils.Tensor("STATE_OUT", state[row : row + 1]),
                        pb_utils.Tensor("CONTEXT_OUT", ctx[row : row + 1]),
                    ]
                )
        return responses


def _optional(request, name, shape):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return np.zeros(shape, np.float32) if tensor is None else tensor.as_numpy()


def _error(exc):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"vad: {exc}"))
