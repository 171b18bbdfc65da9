"""`replica train` and `render` (a replica trained from video, and rendered speaking, through
the platform's Triton), `replica create` (the operator's `system` replica, queued on the worker as
`POST /v2/replicas` queues one) and `replica quantize`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from doppel.cli.endpoints import triton_url
from doppel.settings import Settings


def quantize(args: argparse.Namespace) -> int:
    from doppel.replica.artefact import Replica
    from doppel.replica.onnx import quantize_existing

    print(json.dumps(quantize_existing(Replica.load(args.replica)), indent=2))
    return 0


async def talking_head(args: argparse.Namespace) -> int:
    import time

    from doppel.errors import DoppelError
    from doppel.triton import TritonClient

    client = TritonClient(triton_url(args.triton), timeout_s=600)
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    try:
        if not await client.ready():
            print("error: Triton is not ready: start the platform with `make up`", file=sys.stderr)
            return 3
        if args.command == "replica":
            from doppel.replica import training

            options = training.TrainOptions.make(
                stt_url=client.url,
                renderer_steps=args.steps,
                mouth_steps=args.mouth_steps,
                voice_epochs=args.voice_epochs,
                voice=not args.no_voice,
            )

            class Say(logging.Handler):  # training's lines for people, printed as before
                def emit(self, record: logging.LogRecord) -> None:
                    say(record.getMessage())

            lines = logging.getLogger(training.__name__)
            lines.setLevel(logging.INFO)
            lines.addHandler(Say())
            lines.propagate = False  # once, as `say` prints it
            made = await training.train(
                args.videos, args.out, encode=client.encode_audio, vad=client.vad, options=options
            )
            for name in sorted(p.name for p in made.folder.iterdir()):
                print(f"  {made.folder / name}")
            print(json.dumps(made.meta["timings"]))
            return 0
        from doppel.audio import media
        from doppel.platform.progress import Progress
        from doppel.render import video
        from doppel.replica.artefact import Replica

        rep = Replica.load(args.replica)
        reports = 0

        def frames(done: Progress) -> None:
            # A line every 10 chunks (the render reports each one).
            nonlocal reports
            if done.done == 0:
                say(f"rendering {done.total} frames")
                return
            if reports % 10 == 0:
                say(f"frame {done.done}/{done.total}")
            reports += 1

        if args.text is not None:
            if rep.voice_folder is None:
                print(
                    "error: this replica was trained without a voice (--no-voice); pass --audio",
                    file=sys.stderr,
                )
                return 2
            result = await video.render_script(
                rep,
                args.text,
                args.out,
                engine=client,
                base_video=args.video,
                watermark=not args.no_watermark,
                progress=frames,
            )
            say(f"script spoken in the replica's voice in {result.timings['speech_s']:.1f} s")
        else:
            result = await video.render(
                rep,
                await media.decode_audio(args.audio),
                args.out,
                engine=client,
                soundtrack=args.audio,
                base_video=args.video,
                watermark=not args.no_watermark,
                progress=frames,
            )
        print(
            f"{result.frames} frames ({result.duration_s:.1f} s) written to {result.path} in "
            f"{result.seconds:.1f} s ({result.fps:.1f} frames/s)"
        )
        return 0
    except (DoppelError, FileNotFoundError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    finally:
        await client.close()


async def create(args: argparse.Namespace) -> int:
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
