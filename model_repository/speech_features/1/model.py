"""BLS: text -> tts -> resample to 16 kHz -> audio_encoder (see export/speech_features.py)."""

import os
import sys

# Triton's Python-backend stub ignores PYTHONPATH; the launcher names the repo and virtualenv here.
sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.audio.media import SPEECH_RATE, resample  # noqa: E402


class TritonPythonModel:
    async def execute(self, requests):
        return [await self._one(request) for request in requests]

    async def _one(self, request):
        text = pb_utils.get_input_tensor_by_name(request, "TEXT")
        tts = await pb_utils.InferenceRequest(
            model_name="tts",
            requested_output_names=["AUDIO", "SAMPLE_RATE", "TIMINGS"],
            inputs=[pb_utils.Tensor("TEXT", text.as_numpy().reshape(1, 1))],
        ).async_exec()
        if tts.has_error():
            return _error(f"tts: {tts.error().message()}")
        audio = pb_utils.get_output_tensor_by_name(tts, "AUDIO").as_numpy()
        rate = pb_utils.get_output_tensor_by_name(tts, "SAMPLE_RATE").as_numpy()
        timings = pb_utils.get_output_tensor_by_name(tts, "TIMINGS").as_numpy()
        speech16k = resample(audio.reshape(-1), int(rate.reshape(-1)[0]), SPEECH_RATE)
        enc = await pb_utils.InferenceRequest(
            model_name="audio_encoder",
            requested_output_names=["FEATURES"],
            inputs=[pb_utils.Tensor("AUDIO", speech16k[None, :])],
        ).async_exec()
        if enc.has_error():
            return _error(f"audio_encoder: {enc.error().message()}")
        features = pb_utils.get_output_tensor_by_name(enc, "FEATURES").as_numpy()
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor("AUDIO", audio.reshape(-1).astype(np.float32)),
                pb_utils.Tensor("SAMPLE_RATE", rate.reshape(-1).astype(np.int32)),
                pb_utils.Tensor("TIMINGS", timings.reshape(-1)),
                pb_utils.Tensor("FEATURES", features.reshape(-1, features.shape[-1])),
            ]
        )


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
