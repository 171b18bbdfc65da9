"""Async gRPC client for the Triton Inference Server that serves every Doppel model.

The API and the workers call models only through this module, never in-process.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from doppel.errors import InferenceFailed, ServiceUnavailable
from doppel.media import Audio
from doppel.vad import StreamState

#: gRPC status codes that mean "the server is not there or not ready", as opposed to a request
#: the model rejected.
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}


def _grpc_target(url: str) -> str:
    """Tritonclient wants host:port, not a URL."""
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return url


class TritonClient:
    """One channel to Triton, shared by all requests of a process."""

    def __init__(self, url: str, *, timeout_s: float = 120.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(_grpc_target(url))

    async def close(self) -> None:
        await self._client.close()

    async def ready(self, model: str | None = None) -> bool:
        """True when the server (and `model`, if named) answers ready within 2 seconds."""
        try:
            if model is None:
                return bool(await self._client.is_server_ready(client_timeout=2.0))
            return bool(await self._client.is_model_ready(model, client_timeout=2.0))
        except InferenceServerException:
            return False

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run `model` on one request; maps transport failures to `ServiceUnavailable`."""
        request = []
        for name, array in inputs.items():
            dtype = "BYTES" if array.dtype == np.object_ else _triton_dtype(array.dtype)
            item = grpcclient.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            request.append(item)
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(
                model, request, outputs=wanted, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            if str(exc.status()) in _UNAVAILABLE or exc.status() is None:
                raise ServiceUnavailable(
                    f"The inference service is unavailable ({model}); try again shortly."
                ) from exc
            raise InferenceFailed(
                f"The {model} model could not process this input: {exc.message()}"
            ) from exc
        return {name: result.as_numpy(name) for name in outputs}

    async def transcribe(self, audio: Audio, *, language: str | None = None) -> dict[str, Any]:
        """Speech-to-text through the `stt` model; returns the decoded transcript document."""
        inputs = {"AUDIO": audio.samples.astype(np.float32)[None, :]}
        if language:
            inputs["LANGUAGE"] = np.array([[language.encode()]], dtype=np.object_)
        out = await self.infer("stt", inputs, ["TRANSCRIPT"])
        return dict(json.loads(out["TRANSCRIPT"].reshape(-1)[0]))


    async def vad(
        self, samples: np.ndarray, stream: StreamState | None = None
    ) -> tuple[np.ndarray, StreamState]:
        """Speech probability per 32 ms chunk through the `vad` model, continuing `stream`.

        `samples` must be 16 kHz and a whole number of 512-sample chunks.
        """
        stream = stream or StreamState()
        out = await self.infer(
            "vad",
            {
                "AUDIO": np.ascontiguousarray(samples, dtype=np.float32)[None, :],
                "STATE": stream.state[None].astype(np.float32),
                "CONTEXT": stream.context[None].astype(np.float32),
            },
            ["PROBS", "STATE_OUT", "CONTEXT_OUT"],
        )
        return out["PROBS"][0], StreamState(out["STATE_OUT"][0], out["CONTEXT_OUT"][0])


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(dtype))
