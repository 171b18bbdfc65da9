"""Triton Python-backend adapter for `doppel.replica.serving` (the logic lives there): mouth
points from lip-sync features with each request's replica's `mouth.onnx`, from an LRU cache.
"""

import json
import os
import sys

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.platform.sessions import SessionCache  # noqa: E402
from doppel.replica.layout import MOUTH_INPUT, MOUTH_OUTPUT, REPLICA_INPUT  # noqa: E402
from doppel.replica.serving import cache_capacity, mouth_batch  # noqa: E402
from doppel.settings import onnx_providers_from_env  # noqa: E402

NAME = "mouth_motion"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.cache = SessionCache(
            cache_capacity(NAME, params, os.environ, default=64),
            threads=int(params.get("threads", 1)),
            providers=onnx_providers_from_env(os.environ),
        )

    def execute(self, requests):
        results = mouth_batch(
            self.cache, [(_input(r, REPLICA_INPUT), _input(r, MOUTH_INPUT)) for r in requests]
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
    return pb_utils.InferenceResponse([pb_utils.Tensor(MOUTH_OUTPUT, result)])
