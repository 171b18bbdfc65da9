"""`voice train`, `voice export` and `say`: a cloned voice learned from speech, and text spoken
in it, through the platform's Triton when one answers and in-process otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from doppel.cli.endpoints import find_triton
from doppel.settings import models_dir_from_env

if TYPE_CHECKING:
    import numpy as np


def run(args: argparse.Namespace) -> int:
    from doppel.errors import DoppelError

    if args.command == "voice":
        import torch

        # One thread: on 2 cores more threads than cores slow small models tenfold.
        torch.set_num_threads(1)
    models_dir = models_dir_from_env(os.environ)
    try:
        if args.command == "voice" and args.voice_command == "export":
            from doppel.voice import learning, profile

            diff = profile.export_onnx(args.folder)
            print(
                f"{args.folder / profile.VOICE_ONNX} written (ONNX Runtime vs PyTorch {diff:.2g})"
            )
            return 0
        if args.command == "voice":
            from doppel.voice import profile

            transcripts = None
            if args.transcripts:
                transcripts = args.transcripts.read_text(encoding="utf-8").splitlines()
            options = learning.TrainOptions()
            if args.epochs:
                options = learning.TrainOptions(epochs=args.epochs)
            stt = _triton_transcriber(args.triton)
            if stt is None and args.triton:
                print(f"error: Triton at {args.triton} is not ready (--triton)", file=sys.stderr)
                return 3
            print(
                f"Whisper through Triton at {stt.url}, model `stt`"
                if stt
                else "no platform running: Whisper in-process",
                flush=True,
            )
            learned = profile.train(
                args.sources,
                models_dir,
                transcripts=transcripts,
                options=options,
                progress=lambda msg: print(msg, flush=True),
                stt=stt,
            )
            learned.save(args.out)
            print(f"voice profile written to {args.out}")
            return 0
        from scipy.io import wavfile

        url, source = find_triton(args.triton)
        served = asyncio.run(_say_through_triton(args, url)) if url else None
        if served is None and url and args.triton:
            print(f"error: Triton at {url} is not ready (--triton)", file=sys.stderr)
            return 3
        if served is not None:
            print(f"spoken through Triton at {url} ({source}), model `voice`")
            rate, audio, timings = served
        else:
            from doppel.voice.clone import ClonedVoice
            from doppel.voice.serving import speech_timings

            why = f"Triton at {url} ({source}) does not answer" if url else "no Triton address"
            print(f"no platform running ({why}): spoken in-process")
            speech = ClonedVoice.load(args.voice, models_dir).say(args.text)
            rate, audio, timings = speech.sample_rate, speech.audio, speech_timings(speech)
        wavfile.write(args.out, rate, audio)
        if args.timings:
            args.timings.write_text(json.dumps(timings, indent=1), encoding="utf-8")
        print(f"{len(audio) / rate:.2f} s written to {args.out}")
        return 0
    except (DoppelError, FileNotFoundError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


def _triton_transcriber(given: str | None) -> Any:
    """A `doppel.triton.TritonTranscriber` for the platform's (or `given`) Triton when its `stt`
    model answers ready; None otherwise.
    """
    from doppel.triton import TritonClient, TritonTranscriber

    url, _ = find_triton(given)
    if not url:
        return None

    async def ready() -> bool:
        client = TritonClient(url, timeout_s=10)
        try:
            return await client.ready("stt")
        except Exception:  # noqa: BLE001 - any failure to answer means "not there"
            return False
        finally:
            await client.close()

    return TritonTranscriber(url) if asyncio.run(ready()) else None


async def _say_through_triton(
    args: argparse.Namespace, url: str
) -> tuple[int, np.ndarray, dict[str, Any]] | None:
    """(rate, audio, timings) from the `voice` model; None when Triton does not answer ready."""
    from doppel.triton import TritonClient

    client = TritonClient(url, timeout_s=600)
    try:
        if not await client.ready():
            return None
        audio, timings = await client.say(args.voice.resolve(), args.text)
        return audio.rate, audio.samples, timings
    finally:
        await client.close()
