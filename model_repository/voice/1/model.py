"""Triton Python-backend adapter for `doppel.voice.serving` (the logic lives there): text in a
cloned voice, whole: AUDIO (16 kHz), TIMINGS (JSON: words, sentences, phonemes), SAMPLE_RATE.
"""

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
from doppel.voice.serving import (  # noqa: E402
    DEFAULT_CAPACITY,
    VoiceServer,
    encode_timings,
    speech_timings,
)

NAME = "voice"


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
        responses = []
        for request in requests:  # one after the other: both cores serve one synthesis
            try:
                speech = self.server.say(_input(request, "VOICE"), _input(request, "TEXT"))
                timings = encode_timings(speech_timings(speech))
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
                message = exc.message if isinstance(exc, DoppelError) else f"{NAME}: {exc}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def finalize(self):
        self.server.close()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
