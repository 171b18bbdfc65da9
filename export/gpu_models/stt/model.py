"""GPU `stt`: the greedy Whisper loop of `doppel.audio.whisper_greedy` over the TensorRT engines
`stt_encoder` and `stt_decoder` (BLS). Same inputs and TRANSCRIPT document as the CPU model.
"""

import json
import os
import sys
from pathlib import Path

sys.path[:0] = [p for p in os.environ.get("DOPPEL_PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from doppel.audio.features import SAMPLE_RATE, WINDOW_SAMPLES, mel_windows  # noqa: E402
from doppel.audio.whisper_greedy import tokenizer, transcribe_window  # noqa: E402
from doppel.platform import weights  # noqa: E402


def _call(model, inputs, output):
    response = pb_utils.InferenceRequest(
        model_name=model,
        requested_output_names=[output],
        inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
    ).exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, output).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        folder = weights.model_dir(Path(os.environ["DOPPEL_MODELS_DIR"]), "whisper-base")
        self.tok = tokenizer(folder)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
                texts, segments = [], []
                for i, mel in enumerate(mel_windows(audio)):
                    text = transcribe_window(
                        mel[None],
                        lambda m: _call("stt_encoder", {"MEL": m.astype(np.float32)}, "STATES"),
                        lambda t, s: _call("stt_decoder", {"TOKENS": t, "STATES": s}, "LOGITS"),
                        self.tok,
                    )
                    start = i * WINDOW_SAMPLES / SAMPLE_RATE
                    end = min(len(audio), (i + 1) * WINDOW_SAMPLES) / SAMPLE_RATE
                    segments.append({"start": start, "end": round(end, 3), "text": text})
                    texts.append(text)
                doc = {
                    "text": " ".join(texts).strip(),
                    "language": "en",
                    "duration_s": round(len(audio) / SAMPLE_RATE, 3),
                    "segments": segments,
                }
                out = np.array([[json.dumps(doc).encode()]], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TRANSCRIPT", out)]))
            except Exception as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"stt: {exc}"))
                )
        return responses
