"""Triton Python-backend adapter for `doppel.voice.tts` (the logic lives there): whole text in,
whole
audio and word timings out."""

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
        responses = []
        for request in requests:
            try:
                speech = self.tts.synthesize(*_read(request))
                timings = json.dumps(speech.timings()).encode()
                responses.append(
                    pb_utils.InferenceResponse(
                        [
                            pb_utils.Tensor("AUDIO", speech.audio[None, :].astype(np.float32)),
                            pb_utils.Tensor("TIMINGS", np.array([[timings]], dtype=np.object_)),
                            pb_utils.Tensor(
                                "SAMPLE_RATE", np.array([[speech.sample_rate]], np.int32)
                            ),
                        ]
                    )
                )
            except Exception as exc:  # one bad request must not fail the others in the batch
                message = exc.message if isinstance(exc, DoppelError) else f"tts: {exc}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def finalize(self):
        self.tts = None


def _read(request):
    """(text, options) of one request, read by `doppel.voice.tts.request_from_tensors`."""

    def get(name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    return request_from_tensors(get)
