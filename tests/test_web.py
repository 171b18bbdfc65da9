"""The web app in a real browser (issue 7): Debian's chromium, driven by playwright-core
(web/e2e/run.mjs), against an API process serving the built app on the session's PostgreSQL,
Redis and Triton. Screenshots of every screen go to `web/e2e/artifacts/` (or
$DOPPEL_WEB_ARTIFACTS).

The whole flow runs too (`DOPPEL_WEB_FULL=0` leaves it out while working on a page): an operator
replica of the Obama clips (`python -m doppel replica create`, the issue's operator path, no
consent) is trained to completed by a worker with small training sizes, a video is made from a
script and played and seeked, and a CSV batch of 3 rows (one bad) ends 2 ready / 1 error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doppel.face import video
from doppel.platform.processes import free_port
from doppel.platform.stack import LocalPlatform
from doppel.settings import REPO_ROOT
from tests.conftest import new_caller, shared_file

pytestmark = pytest.mark.web

WEB = REPO_ROOT / "web"
CHROMIUM = Path(os.environ.get("DOPPEL_CHROMIUM", "/usr/bin/chromium"))
FULL = os.environ.get("DOPPEL_WEB_FULL", "1") != "0"
#: The Obama clips tests/test_replicas_videos.py trains on (each is ~4 s; a replica needs 10 s).
TRAIN = ("01", "02", "04", "07")


def _needs() -> str | None:
    if shutil.which("node") is None:
        return "needs node (Node 20)"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "needs web/node_modules (scripts/bootstrap.sh runs npm ci)"
    if not (WEB / "out" / "index.html").is_file():
        return "needs the web build web/out (scripts/bootstrap.sh runs npm run build)"
    if not CHROMIUM.exists():
        return f"needs chromium at {CHROMIUM} (scripts/bootstrap.sh installs Debian's chromium)"
    return None


def _wait_live(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health/live", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the API did not answer in 60 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def web_stack(
    platform: LocalPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """An API process (and, for the full flow, a worker) on the session's services."""
    reason = _needs()
    if reason:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("web-logs")
    env = platform.app_env(platform.read_endpoints())
    env.update(DOPPEL_WEB_DIR=str(WEB / "out"), DOPPEL_ALLOW_PRIVATE_URLS="1")
    # Training sizes of the integration tests: minutes, not an hour, on a CPU.
    for var, value in (
        ("DOPPEL_RENDERER_STEPS", "60"),
        ("DOPPEL_MOUTH_STEPS", "40"),
        ("DOPPEL_VOICE_EPOCHS", "4"),
    ):
        env.setdefault(var, value)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api_log = logs / "api.log"
        with api_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [platform.python, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_live(url, procs[0], api_log)
        if FULL:
            with (logs / "worker.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [platform.python, "-m", "orchestrator"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield url, env
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.data
@pytest.mark.timeout(7200 if FULL else 600)
async def test_the_web_app_in_a_browser(
    web_stack: tuple[str, dict[str, str]], pool: Any, tmp_path: Path
) -> None:
    url, stack_env = web_stack
    # The Obama clips the replica tests train on, joined: one upload of over 10 s of talking.
    clip = tmp_path / "obama.mp4"
    await asyncio.to_thread(
        video.concatenate,
        [shared_file("talking", "obama", f"obama_sent_{n}.mp4") for n in TRAIN],
        clip,
    )
    caller = await new_caller(pool, "web")
    artifacts = Path(os.environ.get("DOPPEL_WEB_ARTIFACTS", WEB / "e2e" / "artifacts"))
    shutil.rmtree(artifacts, ignore_errors=True)
    extra: dict[str, str] = {"DOPPEL_WEB_FULL": "1" if FULL else "0"}
    if FULL:
        # The operator's path: a system replica queued for the worker, its id on the last line.
        made = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "doppel", "replica", "create", "--tenant"],
            *[caller.tenant.name, "--name", "Obama (operator)", str(clip)],
            env=stack_env,
            stdout=PIPE,
            stderr=STDOUT,
        )
        said, _ = await made.communicate()
        assert made.returncode == 0, said.decode()[-2000:]
        extra["REPLICA_ID"] = said.decode().strip().splitlines()[-1]
    env = dict(
        os.environ,
        **extra,
        BASE_URL=url,
        API_KEY=caller.key,
        ARTIFACTS=str(artifacts),
        TRAIN_VIDEO=str(clip),
        CHROMIUM=str(CHROMIUM),
    )
    proc = await asyncio.create_subprocess_exec(
        "node", "e2e/run.mjs", cwd=WEB, env=env, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=7000 if FULL else 500)
    assert proc.returncode == 0, f"web e2e failed:\n{out.decode()}"
    shots = {p.stem for p in await asyncio.to_thread(lambda: list(artifacts.glob("*.png")))}
    expected = {"01-signin-wrong-key", "02-replicas", "03-replica-uploaded", "04-videos"}
    expected |= {"05-templates", "06-csv-preview", "07-webhooks"}
    expected |= {f"phone-{n}" for n in ("replicas", "videos", "templates", "webhooks")}
    if FULL:
        expected |= {"10-full-replica-done", "11-full-video-player", "12-full-batch"}
        expected.add("13-full-webhook-deliveries")
    assert expected <= shots, f"missing screenshots: {sorted(expected - shots)}"
