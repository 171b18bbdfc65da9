"""Triton Python-backend adapter for `doppel.audio.stt` (the logic lives there)."""

import json
import os
import sys
from pathlib import Path

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.audio.stt import SpeechToText, SttOptions  # noqa: E402
from doppel.platform import weights  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        models_dir = Path(os.environ["DOPPEL_MODELS_DIR"])
        folder = weights.model_dir(models_dir, params["weights"])
        self.stt = SpeechToText(
            folder,
            SttOptions(
                compute_type=params["compute_type"],
                beam_size=int(params["beam_size"]),
                cpu_threads=int(params["cpu_threads"]),
            ),
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy()
                language = _optional(request, "LANGUAGE")
                beam = _optional(request, "BEAM_SIZE")
                doc = self.stt.transcribe(
                    audio.reshape(-1),
                    language=language.reshape(-1)[0].decode() if language is not None else None,
                    beam_size=int(beam.reshape(-1)[0]) if beam is not None else None,
                )
                out = np.array([[json.dumps(doc).encode()]], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TRANSCRIPT", out)]))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"stt: {exc}"))
                )
        return responses

    def finalize(self):
        self.stt = None


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
