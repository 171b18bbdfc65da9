"""Async gRPC client for the Triton Inference Server that serves every Doppel model.

The API and the workers call models only through this module, never in-process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from doppel.audio.media import SPEECH_RATE, Audio
from doppel.audio.vad import StreamState
from doppel.errors import InferenceFailed, ServiceUnavailable
from doppel.face.regions import SIZE

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

    async def transcribe(
        self, audio: Audio, *, language: str | None = None, beam_size: int | None = None
    ) -> dict[str, Any]:
        """Speech-to-text through the `stt` model; returns the decoded transcript document."""
        inputs = {"AUDIO": audio.samples.astype(np.float32)[None, :]}
        if language:
            inputs["LANGUAGE"] = np.array([[language.encode()]], dtype=np.object_)
        if beam_size:
            inputs["BEAM_SIZE"] = np.array([[beam_size]], dtype=np.int32)
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

    async def encode_audio(self, samples: np.ndarray) -> np.ndarray:
        """Lip-sync features through the `audio_encoder` model: 16 kHz samples ->
        [ceil(len / 640), 512] float32, one vector per 25 fps video frame.
        """
        out = await self.infer(
            "audio_encoder",
            {"AUDIO": np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)},
            ["FEATURES"],
        )
        return out["FEATURES"].reshape(-1, out["FEATURES"].shape[-1])

    async def render_faces(
        self, replica: Path, inputs: np.ndarray, *, max_batch: int = 16
    ) -> np.ndarray:
        """Face frames through the `talking_head` model with `replica`'s renderer:
        uint8 [N, 7, S, S] -> uint8 [N, 3, S, S] (S = regions.SIZE), in order.

        `replica` is the replica's absolute folder (it must hold `renderer.onnx`). Every frame
        is its own request, sent concurrently, so Triton's dynamic batcher forms the batches
        (across callers too); at most 2 x `max_batch` (the model's max batch size) are in
        flight, so one batch can queue while the previous one runs.
        """
        frames = np.asarray(inputs)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (7, SIZE, SIZE):
            raise ValueError(
                f"render_faces takes uint8 [N, 7, {SIZE}, {SIZE}], "
                f"not {frames.dtype} {frames.shape}"
            )
        if len(frames) == 0:
            return np.zeros((0, 3, SIZE, SIZE), np.uint8)
        name = np.array([[str(replica).encode()]], dtype=np.object_)
        gate = asyncio.Semaphore(max(1, 2 * max_batch))

        async def one(frame: np.ndarray) -> np.ndarray:
            async with gate:
                out = await self.infer(
                    "talking_head",
                    {"INPUT": np.ascontiguousarray(frame[None]), "REPLICA": name},
                    ["IMAGE"],
                )
            return out["IMAGE"][0]

        tasks = [asyncio.ensure_future(one(frame)) for frame in frames]
        try:
            images = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one frame failed (or the caller gave up): stop the others
                task.cancel()
            raise
        return np.stack(images)

    async def mouth_points(self, replica: Path, features: np.ndarray) -> np.ndarray:
        """Mouth points through the `mouth_motion` model with `replica`'s mouth model:
        float32 features [T, 512] (`encode_audio`'s output) -> [T, 53, 2].
        """
        feats = np.ascontiguousarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != 512:
            raise ValueError(f"mouth_points takes features [T, 512], not {feats.shape}")
        out = await self.infer(
            "mouth_motion",
            {
                "FEATURES": feats[None],
                "REPLICA": np.array([str(replica).encode()], dtype=np.object_),
            },
            ["POINTS"],
        )
        return out["POINTS"][0]

    async def synthesize(
        self,
        text: str,
        *,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
    ) -> tuple[Audio, dict[str, Any]]:
        """Text-to-speech through the `tts` model: the audio (22.05 kHz) and its timings.

        Timings: `{sample_rate, words: [{word, start, end}], sentences: [...]}`, in seconds.
        """
        inputs = {
            "TEXT": np.array([[text.encode()]], dtype=np.object_),
            **_scales(noise_scale, length_scale, noise_w, batched=True),
        }
        out = await self.infer("tts", inputs, list(_SPEECH_OUTPUTS))
        return _speech(out.__getitem__)

    async def synthesize_stream(
        self,
        text: str,
        *,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
    ) -> AsyncIterator[tuple[Audio, dict[str, Any]]]:
        """Streaming text-to-speech through the decoupled `tts_stream` model: yields each
        sentence's audio and timings (seconds from the start of the whole text) as it is spoken.

        Leaving the loop early cancels the request, so the server stops speaking.
        """
        arrays = {
            "TEXT": np.array([text.encode()], dtype=np.object_),
            **_scales(noise_scale, length_scale, noise_w, batched=False),
        }
        async for item in self._speech_stream("tts_stream", arrays):
            yield item

    async def say(self, voice: Path, text: str) -> tuple[Audio, dict[str, Any]]:
        """Text in a cloned voice through the `voice` model: 16 kHz audio and its timings.

        `voice` is the profile's absolute folder (`python -m doppel voice train ... --out DIR`;
        it must hold `voice.onnx`). Timings: `{sample_rate, words: [{word, start, end}],
        phonemes: [{phoneme, start, end}], sentences: [{text, start, end, words, phonemes}]}`,
        in seconds. A bad folder or text raises `InferenceFailed` with the model's reason.
        """
        inputs = {
            "TEXT": np.array([[text.encode()]], dtype=np.object_),
            "VOICE": np.array([[str(voice).encode()]], dtype=np.object_),
        }
        out = await self.infer("voice", inputs, list(_SPEECH_OUTPUTS))
        return _speech(out.__getitem__)

    async def say_stream(
        self, voice: Path, text: str
    ) -> AsyncIterator[tuple[Audio, dict[str, Any]]]:
        """Text in a cloned voice through the decoupled `voice_stream` model: yields each
        sentence's audio and timings (`{text, start, end, words, phonemes}`, seconds from the
        start of the whole text) as soon as it is converted. Back to back, the sentences are
        `say`'s audio. Leaving the loop early cancels the request.
        """
        arrays = {
            "TEXT": np.array([text.encode()], dtype=np.object_),
            "VOICE": np.array([str(voice).encode()], dtype=np.object_),
        }
        async for item in self._speech_stream("voice_stream", arrays):
            yield item

    async def _speech_stream(
        self, model: str, arrays: dict[str, np.ndarray]
    ) -> AsyncIterator[tuple[Audio, dict[str, Any]]]:
        """Each sentence's audio and timings from a decoupled speech model; closing this
        generator early closes the stream (the server stops speaking).
        """
        stream = self._stream(model, arrays, list(_SPEECH_OUTPUTS))
        try:
            async for result in stream:
                yield _speech(result.as_numpy)
        finally:
            await stream.aclose()

    async def _stream(
        self, model: str, arrays: dict[str, np.ndarray], outputs: list[str]
    ) -> AsyncGenerator[Any, None]:
        """The non-empty results of one request to the decoupled `model`, until its FINAL
        flag; model errors raise `InferenceFailed`, transport ones `ServiceUnavailable`.
        """
        request = {
            "model_name": model,
            "inputs": _infer_inputs(arrays),
            "outputs": [grpcclient.InferRequestedOutput(n) for n in outputs],
            # Ask for the FINAL flag as an empty response, so the stream's end is known.
            "parameters": {"triton_enable_empty_final_response": True},
        }

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request

        responses = self._client.stream_infer(requests(), stream_timeout=self.timeout_s)
        done = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise InferenceFailed(
                        f"The {model} model could not process this input: {error.message()}"
                    )
                response = result.get_response()
                done = response.parameters["triton_final_response"].bool_param
                if response.outputs:
                    yield result
                if done:
                    break
        except grpc.aio.AioRpcError as exc:
            raise ServiceUnavailable(
                f"The inference service is unavailable ({model}); try again shortly. {exc}"
            ) from exc
        finally:
            if not done:
                responses.cancel()


#: What the speech models (tts, tts_stream, voice, voice_stream) answer.
_SPEECH_OUTPUTS = ("AUDIO", "TIMINGS", "SAMPLE_RATE")


def _speech(get: Callable[[str], np.ndarray]) -> tuple[Audio, dict[str, Any]]:
    """Audio and timings from a speech model's outputs (`get(name)` -> array)."""
    rate = int(get("SAMPLE_RATE").reshape(-1)[0])
    timings = dict(json.loads(get("TIMINGS").reshape(-1)[0]))
    return Audio(get("AUDIO").reshape(-1).astype(np.float32), rate), timings


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(dtype))


def _infer_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    request = []
    for name, array in arrays.items():
        dtype = "BYTES" if array.dtype == np.object_ else _triton_dtype(array.dtype)
        item = grpcclient.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array)
        request.append(item)
    return request


def _scales(
    noise_scale: float | None, length_scale: float | None, noise_w: float | None, *, batched: bool
) -> dict[str, np.ndarray]:
    """The optional VITS scale inputs that were given (None keeps the voice's default)."""
    given = {"NOISE_SCALE": noise_scale, "LENGTH_SCALE": length_scale, "NOISE_W": noise_w}
    shape = (1, 1) if batched else (1,)
    return {k: np.full(shape, v, dtype=np.float32) for k, v in given.items() if v is not None}


class TritonTranscriber:
    """Whisper through Triton's `stt` model, synchronously: the `doppel.voice.enrol.Transcriber`
    that voice training uses on the platform (it runs in a worker thread or process, with no event
    loop of its own). Here, not in `doppel.voice`, so the voice logic that Triton's own models
    run never imports a Triton client.
    """

    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def transcribe(
        self, samples: np.ndarray, *, language: str | None = None, beam_size: int | None = None
    ) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            client = TritonClient(self.url, timeout_s=self.timeout_s)
            try:
                audio = Audio(np.asarray(samples, dtype=np.float32), SPEECH_RATE)
                return await client.transcribe(audio, language=language, beam_size=beam_size)
            finally:
                await client.close()

        return asyncio.run(run())
