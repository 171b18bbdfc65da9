"""`python -m doppel up/down` as `make up` runs them, against the session's services."""

import asyncio
import json
import os
import subprocess
import sys

import httpx

from doppel.domain import tenants
from doppel.platform.processes import free_port
from doppel.platform.stack import LocalPlatform
from doppel.settings import REPO_ROOT, Settings
from tests.conftest import shared_file


def _cli(run_dir, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doppel", "--run-dir", str(run_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_up_uses_given_services_starts_the_rest_and_down_stops_only_its_own(
    tmp_path, settings: Settings, platform: LocalPlatform, pool: object
) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        TRITON_GRPC_URL=settings.triton_grpc_url,
        TRITON_HTTP_URL=settings.triton_http_url,
        DOPPEL_LLM_URL=settings.llm_url,
        DOPPEL_LLM_MODEL=settings.llm_model,
        DOPPEL_API_PORT=str(free_port()),
        DOPPEL_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO_ROOT),
    )
    run_dir = tmp_path / "run"
    up = await asyncio.to_thread(_cli, run_dir, "up", env=env)
    assert up.returncode == 0, up.stderr
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    assert {
        "api",
        "web",
        "triton_http",
        "triton_grpc",
        "triton_metrics",
        "llm",
        "llm_model",
        "database_url",
        "redis_url",
    } <= endpoints.keys()
    assert endpoints["database_url"] == settings.database_url  # given, so not started
    assert endpoints["llm"] == settings.llm_url
    local = LocalPlatform(run_dir)
    assert {n for n in ("postgres", "redis", "triton", "llm") if local.managed(n)} == set()
    api, worker = local.managed("api"), local.managed("worker")
    assert api and api.alive() and worker and worker.alive()

    again = await asyncio.to_thread(_cli, run_dir, "up", env=env)  # twice is harmless
    assert again.returncode == 0, again.stderr
    assert local.managed("api") == api and local.managed("worker") == worker

    key = (await tenants.create_key(pool, "platform-test")).key  # type: ignore[arg-type]
    jfk = shared_file("speech", "jfk.flac")
    async with httpx.AsyncClient(base_url=endpoints["api"], timeout=120) as http:
        assert (await http.get("/health/ready")).status_code == 200
        # The web app is the API's own origin; served when its build exists (bootstrap makes it).
        assert endpoints["web"] == endpoints["api"] + "/"
        if (REPO_ROOT / "web" / "out" / "index.html").is_file():
            home = await http.get(endpoints["web"])
            assert home.status_code == 200 and "<title>Doppel</title>" in home.text
        queued = await http.post(
            "/v2/transcriptions",
            params={"async": "true"},
            headers={"x-api-key": key},
            files={"file": (jfk.name, jfk.read_bytes(), "audio/flac")},
        )
        assert queued.status_code == 202
        tid = queued.json()["transcription_id"]
        status = "queued"
        for _ in range(240):  # the real worker process picks it up
            status = (
                await http.get(f"/v2/transcriptions/{tid}", headers={"x-api-key": key})
            ).json()["status"]
            if status in ("completed", "failed"):
                break
            await asyncio.sleep(0.25)
        assert status == "completed"

    down = await asyncio.to_thread(_cli, run_dir, "down", env=env)
    assert down.returncode == 0 and "worker, api" in down.stdout
    assert not api.alive() and not worker.alive()
    # The session's own services were not ours to stop.
    assert all(platform.managed(n).alive() for n in ("postgres", "redis", "triton", "llm"))


def test_down_never_signals_a_process_that_reused_a_recorded_pid(tmp_path) -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        pids = tmp_path / "pids"
        pids.mkdir()
        # A stale record: same pid, but not the process that was started under it.
        (pids / "redis.json").write_text(
            json.dumps({"name": "redis", "pid": stranger.pid, "start_time": "1", "stop_signal": 15})
        )
        assert LocalPlatform(tmp_path).down() == []
        assert stranger.poll() is None
        assert not (pids / "redis.json").exists()
    finally:
        stranger.kill()
        stranger.wait()
