"""Triton Python-backend adapter for `doppel.voice.serving`, decoupled: one response per
sentence in the cloned voice as soon as it is converted (timings from the start of the text),
then the FINAL flag (gRPC streaming only)."""

import json
import os
import sys
from pathlib import Path

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.errors import DoppelError  # noqa: E402
from doppel.replica.serving import cache_capacity  # noqa: E402
from doppel.voice.serving import DEFAULT_CAPACITY, VoiceServer, encode_timings  # noqa: E402

NAME = "voice_stream"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.server = VoiceServer(
            Path(os.environ["DOPPEL_MODELS_DIR"]),
            capacity=cache_capacity(NAME, params, os.environ, default=DEFAULT_CAPACITY),
            threads=int(params.get("threads", 1)),
        )
        if params.get("warm_base_voices", "true") == "true":
            # A base voice that cannot start fails only the requests of voices built on it.
            for base, reason in self.server.warm().items():
                pb_utils.Logger.log_warn(f"{NAME}: base voice {base} did not start: {reason}")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                for part in self.server.stream(_input(request, "VOICE"), _input(request, "TEXT")):
                    # The client cancelled or went away: stop speaking.
                    if sender.is_cancelled():
                        break
                    timings = encode_timings(part.timings())
                    sender.send(
                        pb_utils.InferenceResponse(
                            [
                                pb_utils.Tensor("AUDIO", part.audio.astype(np.float32)),
                                pb_utils.Tensor("TIMINGS", np.array([timings], dtype=np.object_)),
                                pb_utils.Tensor(
                                    "SAMPLE_RATE", np.array([part.sample_rate], np.int32)
                                ),
                            ]
                        )
                    )
                sender.send(flags=FINAL)
            except Exception as exc:
                message = exc.message if isinstance(exc, DoppelError) else f"{NAME}: {exc}"
                error = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
                sender.send(error, flags=FINAL)
        return None

    def finalize(self):
        self.server.close()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
