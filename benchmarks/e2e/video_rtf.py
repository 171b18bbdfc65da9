"""End to end: wall time from `POST /v2/videos` to `ready` for a ~30 s script, as a real-time
factor (wall seconds / video seconds), with the time per stage (issue 6's benchmark).

The whole platform runs as it does for `make up`: PostgreSQL, Redis, Triton, the API and the
worker as processes on free ports under a temporary run folder. The replica is a trained one:
`--replica DIR` (default: the one `make quality` trains, ~/.cache/doppel/quality/replica_obama)
is registered for a benchmark tenant as a completed replica; without one, the Obama clips are
trained through the operator CLI with small settings first (`--train`; training time is not
part of the measure).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.e2e.video_rtf [--runs 2]

Writes `benchmarks/results/e2e_video.md` and `.json`. Stage times come from the worker
(`videos.timings`): speech is Triton's `voice` model speaking the script; features, mouth, base,
plan are the render's set-up; prepare, infer and composite are the frame pipeline's three
overlapping stages (busy seconds each, they run at the same time), frames_s its wall time
(encoding included); queue_s is POST to the worker taking the job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from doppel.domain import replicas, tenants
from doppel.platform import db
from doppel.platform.stack import LocalPlatform
from doppel.platform.storage import LocalStorage
from doppel.replica import layout
from doppel.settings import REPO_ROOT, Settings, default_cache_dir

RESULTS = REPO_ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("DOPPEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_REPLICA = default_cache_dir(os.environ) / "quality" / "replica_obama"
#: About 30 s when spoken (~80 words).
SCRIPT = (
    "Good morning, and thank you for taking the time to watch this short update. Over the "
    "last quarter our team shipped three major releases, cut response times in half, and "
    "welcomed more than two hundred new customers. None of that would have been possible "
    "without your feedback. In the coming months we will focus on reliability, on better "
    "tools for teams, and on making every part of the product faster. If you have questions, "
    "reply to this message and a real person will answer. Thank you, and have a great week."
)
GOAL_RTF = 1.0


async def register(settings: Settings, replica_dir: Path, tenant: str) -> tuple[str, str]:
    """(api key, replica_id): a tenant with a key and `replica_dir` recorded as its completed
    replica (copied under the tenant's storage like a trained one).
    """
    pool = await db.create_pool(settings.database_url)
    try:
        key = await tenants.create_key(pool, tenant)
        rid = replicas.new_id()
        folder = LocalStorage(settings.data_dir).path_for(key.tenant.id, "replicas", rid)
        await asyncio.to_thread(
            shutil.copytree,
            replica_dir,
            folder / layout.MODEL_FOLDER,
            ignore=shutil.ignore_patterns(layout.WORK),
        )
        await pool.execute(
            """INSERT INTO replicas (replica_id, tenant_id, replica_name, replica_type, status,
                                     training_progress, folder, train_paths)
               VALUES ($1, $2, $3, 'system', 'completed', '100/100', $4, '{}')""",
            rid,
            key.tenant.id,
            "benchmark",
            str(folder),
        )
        return key.key, rid
    finally:
        await pool.close()


def train_small(out: Path, triton: str) -> Path:
    clips = [SHARED / "talking" / "obama" / f"obama_sent_0{n}.mp4" for n in (1, 2, 3, 4, 6, 7)]
    missing = [c for c in clips if not c.exists()]
    if missing:
        raise SystemExit(f"needs the real test data ({missing[0]} is missing)")
    cmd = [sys.executable, "-m", "doppel", "replica", "train", *map(str, clips), "--out", str(out)]
    cmd += ["--steps", "200", "--mouth-steps", "100", "--voice-epochs", "8", "--triton", triton]
    subprocess.run(cmd, check=True)
    return out


async def one_video(api: str, key: str, replica_id: str, pool_url: str) -> dict[str, Any]:
    headers = {"x-api-key": key}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
        start = time.perf_counter()
        posted = await client.post(
            "/v2/videos", json={"replica_id": replica_id, "script": SCRIPT, "video_name": "bench"}
        )
        posted.raise_for_status()
        vid = posted.json()["video_id"]
        while True:
            body = (await client.get(f"/v2/videos/{vid}")).json()
            if body["status"] in ("ready", "error"):
                break
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - start
    if body["status"] != "ready":
        raise SystemExit(f"video {vid} failed: {body['error_message']}")
    pool = await db.create_pool(pool_url)
    try:
        row = await pool.fetchrow(
            "SELECT created_at, started_at, finished_at, timings FROM videos WHERE video_id = $1",
            vid,
        )
    finally:
        await pool.close()
    stages = json.loads(row["timings"])
    stages["queue_s"] = round((row["started_at"] - row["created_at"]).total_seconds(), 3)
    return {
        "video_id": vid,
        "duration_s": body["duration_s"],
        "wall_s": round(wall, 2),
        "rtf": round(wall / body["duration_s"], 3),
        "stages": stages,
    }


def report(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    rtf = statistics.median(r["rtf"] for r in runs)
    lines = [
        "# End to end: POST /v2/videos to ready (30 s script)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores; other work may share it). Replica: {meta['replica']}.",
        "",
        f"**Real-time factor (median of {len(runs)}): {rtf:.2f}** (goal <= {GOAL_RTF}: "
        f"{'met' if rtf <= GOAL_RTF else 'not met'}).",
        "",
        "| run | video s | wall s | RTF | queue | speech | features | mouth | plan | frames "
        "(prepare / infer / composite busy) | thumbnail |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        s = r["stages"]
        lines.append(
            f"| {i} | {r['duration_s']:.2f} | {r['wall_s']:.1f} | {r['rtf']:.2f} | "
            f"{s.get('queue_s', 0):.2f} | {s.get('speech_s', 0):.2f} | "
            f"{s.get('features_s', 0):.2f} | {s.get('mouth_s', 0):.2f} | "
            f"{s.get('plan_s', 0):.2f} | {s.get('frames_s', 0):.1f} "
            f"({s.get('prepare_s', 0):.1f} / {s.get('infer_s', 0):.1f} / "
            f"{s.get('composite_s', 0):.1f}) | {s.get('thumbnail_s', 0):.2f} |"
        )
    lines += [
        "",
        "Run with `PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.e2e.video_rtf`.",
    ]
    return "\n".join(lines) + "\n"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", type=Path, help="trained replica folder")
    parser.add_argument("--train", action="store_true", help="train a small one first")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="doppel-e2e-"))
    env = dict(os.environ, DOPPEL_EPHEMERAL="1")
    for var in ("DATABASE_URL", "REDIS_URL", "TRITON_GRPC_URL", "TRITON_HTTP_URL"):
        env.pop(var, None)
    platform = LocalPlatform(run_dir, env=env)
    try:
        # (up and down run their own event loops: in a thread, not inside this one)
        endpoints = await asyncio.to_thread(platform.up, fixed_ports=False, with_app=True)
        settings = Settings.from_env({**env, "DOPPEL_RUN_DIR": str(run_dir)})
        replica_dir = args.replica or DEFAULT_REPLICA
        if args.train or not (replica_dir / layout.META).exists():
            replica_dir = await asyncio.to_thread(
                train_small, run_dir / "replica", endpoints["triton_grpc"]
            )
        key, rid = await register(settings, replica_dir, "e2e-benchmark")
        runs = []
        for i in range(args.runs):
            result = await one_video(endpoints["api"], key, rid, settings.database_url)
            print(f"run {i + 1}: {json.dumps(result)}", flush=True)
            runs.append(result)
    finally:
        await asyncio.to_thread(platform.down)
        shutil.rmtree(run_dir, ignore_errors=True)
    meta = {"replica": str(replica_dir), "cores": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "e2e_video.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    text = report(runs, meta)
    (RESULTS / "e2e_video.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
