"""Triton Python-backend adapter for `doppel.voice.tts`, decoupled: one response per sentence as
soon
as it is spoken, then the FINAL flag (gRPC streaming only)."""

import json
import os
import sys
from pathlib import Path

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.errors import DoppelError  # noqa: E402
from doppel.voice.tts import TextToSpeech, request_from_tensors  # noqa: E402

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        params = {
            k: v["string_value"]
            for k, v in json.loads(args["model_config"]).get("parameters", {}).items()
        }
        self.tts = TextToSpeech.from_models_dir(
            Path(os.environ["DOPPEL_MODELS_DIR"]),
            params["voice"],
            params["onnx"],
            threads=int(params["threads"]),
        )

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                for part in self.tts.stream(*_read(request)):
                    # The client cancelled or went away: stop speaking (a sentence is ~0.2 s).
                    if sender.is_cancelled():
                        break
                    timings = json.dumps(part.timings()).encode()
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
                message = exc.message if isinstance(exc, DoppelError) else f"tts_stream: {exc}"
                error = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
                sender.send(error, flags=FINAL)
        return None

    def finalize(self):
        self.tts = None


def _read(request):
    """(text, options) of one request, read by `doppel.voice.tts.request_from_tensors`."""

    def get(name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    return request_from_tensors(get)
