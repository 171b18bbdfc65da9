"""Triton Python-backend adapter for `doppel.replica.serving` (the logic lives there): renders
face frames with each request's replica's `renderer.onnx`, from an LRU cache of sessions.
"""

import json
import os
import sys

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.platform.sessions import SessionCache  # noqa: E402
from doppel.replica.layout import RENDERER_INPUT, RENDERER_OUTPUT, REPLICA_INPUT  # noqa: E402
from doppel.replica.serving import cache_capacity, render_batch  # noqa: E402
from doppel.settings import onnx_providers_from_env  # noqa: E402

NAME = "talking_head"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.precision = params.get("precision", "int8")
        self.cache = SessionCache(
            cache_capacity(NAME, params, os.environ, default=16),
            threads=int(params.get("threads", 1)),
            providers=onnx_providers_from_env(os.environ),
        )

    def execute(self, requests):
        # One ONNX Runtime run per replica in the batch; errors stay with their own request.
        results = render_batch(
            self.cache,
            [(_input(r, REPLICA_INPUT), _input(r, RENDERER_INPUT)) for r in requests],
            self.precision,
        )
        return [_response(result) for result in results]

    def finalize(self):
        self.cache.clear()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _response(result):
    if isinstance(result, Exception):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{NAME}: {result}"))
    return pb_utils.InferenceResponse([pb_utils.Tensor(RENDERER_OUTPUT, result)])
