"""Share links and the hosted page, server-sent events, replica thumbnails, and the sweep that
unlocks jobs held by dead workers (the end-to-end killed-worker run is in
tests/test_replicas_videos.py, where a trained replica exists)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import uvicorn
from litestar.testing import AsyncTestClient
from PIL import Image

from api.app import create_app
from doppel.domain import replicas, videos, webhooks
from doppel.platform import feeds, queue
from doppel.settings import Settings
from orchestrator import recovery
from orchestrator.jobs import video as video_job
from tests.conftest import Caller, new_caller, shared_file


def make_mp4(path: Path, seconds: int = 3) -> None:
    """A small real H.264 + AAC MP4 (ffmpeg's test pattern and a tone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=320x240:rate=25",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            "-movflags", "+faststart", str(path),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


async def replica_row(pool: Any, caller: Caller, tmp: Path, status: str = "completed") -> str:
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, status, folder,
                                 train_paths)
           VALUES ($1, $2, 'row only', $3, $4, '{}')""",
        rid,
        caller.tenant.id,
        status,
        str(tmp / rid),
    )
    return rid


async def ready_video(pool: Any, settings: Settings, caller: Caller, name: str) -> tuple[str, Path]:
    """A `ready` video row whose files are a real small MP4 and its thumbnail."""
    rid = await replica_row(pool, caller, settings.data_dir)
    vid = videos.new_id()
    mp4 = settings.data_dir / str(caller.tenant.id) / "videos" / f"{vid}.mp4"
    await asyncio.to_thread(make_mp4, mp4)
    await asyncio.to_thread(video_job.thumbnail, mp4, mp4.with_suffix(".jpg"), 1.5)
    await pool.execute(
        """INSERT INTO videos (video_id, tenant_id, replica_id, video_name, script, status,
                               progress, video_path, thumbnail_path, duration_s)
           VALUES ($1, $2, $3, $4, 'Hello.', 'ready', 100, $5, $6, 3.0)""",
        vid,
        caller.tenant.id,
        rid,
        name,
        str(mp4),
        str(mp4.with_suffix(".jpg")),
    )
    return vid, mp4


def local(url: str) -> str:
    """The path and query of an absolute link the API gave, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# --- share links and the hosted page ----------------------------------------------------------


async def test_share_links_open_media_without_a_key_until_deleted(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    caller = await new_caller(pool, "share")
    vid, mp4 = await ready_video(pool, settings, caller, "Launch <script>alert(1)</script>")
    body = (await client.get(f"/v2/videos/{vid}", headers=caller.headers)).json()
    token = await pool.fetchval("SELECT share_token FROM videos WHERE video_id = $1", vid)
    assert len(token) == 22
    for field, route in (
        ("download_url", "download"),
        ("stream_url", "stream"),
        ("thumbnail_url", "thumbnail.jpg"),
    ):
        assert body[field].endswith(f"/v2/videos/{vid}/{route}?t={token}"), body
    assert body["hosted_url"].endswith(f"/watch/{vid}?t={token}")
    data = mp4.read_bytes()

    # A browser's <video src>: no key, the token in the link; it can seek.
    part = await client.get(local(body["stream_url"]), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206, part.text
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.content == data[100:200]
    whole = await client.get(local(body["download_url"]))
    assert whole.status_code == 200 and whole.content == data
    thumb = await client.get(local(body["thumbnail_url"]))
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    # The owner's key still works without the token.
    keyed = await client.get(f"/v2/videos/{vid}/stream", headers=caller.headers)
    assert keyed.status_code == 200 and keyed.content == data

    neither = await client.get(f"/v2/videos/{vid}/stream")
    assert neither.status_code == 401 and "?t=" in neither.json()["detail"]
    wrong = await client.get(f"/v2/videos/{vid}/stream?t={token[:-1]}x")
    assert wrong.status_code == 404 and "new link" in wrong.json()["detail"]
    # Another tenant's key is checked as a key: the token does not lend it the video.
    other = await new_caller(pool, "other")
    assert (await client.get(local(body["stream_url"]), headers=other.headers)).status_code == 404
    # Only the media routes take a token.
    meta = await client.get(f"/v2/videos/{vid}?t={token}")
    assert meta.status_code == 401

    page = await client.get(local(body["hosted_url"]))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'src="{body["stream_url"]}"' in html
    assert body["download_url"] in html and "AI-generated video" in html and "0:03" in html
    assert "<script>" not in html
    assert "Launch &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http" not in html.replace(body["stream_url"], "").replace(
        body["download_url"], ""
    ).replace(body["thumbnail_url"], ""), "the page loads nothing from elsewhere"
    bad = await client.get(f"/watch/{vid}?t=nope")
    assert bad.status_code == 404 and "Video not found" in bad.text
    assert (await client.get(f"/watch/{vid}")).status_code == 404

    assert (await client.delete(f"/v2/videos/{vid}", headers=caller.headers)).status_code == 200
    gone = await client.get(local(body["stream_url"]), headers={"Range": "bytes=0-9"})
    assert gone.status_code == 404
    assert (await client.get(local(body["hosted_url"]))).status_code == 404


async def test_a_video_not_ready_has_no_links_and_its_page_says_so(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    caller = await new_caller(pool, "share")
    rid = await replica_row(pool, caller, settings.data_dir)
    vid = videos.new_id()
    await pool.execute(
        """INSERT INTO videos (video_id, tenant_id, replica_id, script, status, progress)
           VALUES ($1, $2, $3, 'Hello.', 'generating', 40)""",
        vid,
        caller.tenant.id,
        rid,
    )
    body = (await client.get(f"/v2/videos/{vid}", headers=caller.headers)).json()
    assert body["hosted_url"] is None and body["stream_url"] is None
    token = await pool.fetchval("SELECT share_token FROM videos WHERE video_id = $1", vid)
    page = await client.get(f"/watch/{vid}?t={token}")
    assert page.status_code == 409 and "not ready yet" in page.text
    early = await client.get(f"/v2/videos/{vid}/stream?t={token}")
    assert early.status_code == 409 and "not ready" in early.json()["detail"]


async def test_webhook_bodies_carry_the_same_share_links(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    caller = await new_caller(pool, "hooks")
    vid, _ = await ready_video(pool, settings, caller, "hooked")
    await pool.execute(
        "UPDATE videos SET callback_url = 'http://127.0.0.1:9/hook' WHERE video_id = $1", vid
    )
    delivery = await webhooks.record(pool, "video", vid, "https://doppel.example")
    assert delivery is not None
    body = json.loads(
        await pool.fetchval("SELECT request_body FROM webhook_deliveries WHERE id = $1", delivery)
    )
    token = await pool.fetchval("SELECT share_token FROM videos WHERE video_id = $1", vid)
    assert body["hosted_url"] == f"https://doppel.example/watch/{vid}?t={token}"
    assert body["stream_url"] == f"https://doppel.example/v2/videos/{vid}/stream?t={token}"
    got = (await client.get(f"/v2/videos/{vid}", headers=caller.headers)).json()
    assert set(body) - {"event"} == set(got)


# --- server-sent events -----------------------------------------------------------------------


def parse_sse(text: str) -> tuple[list[dict[str, Any]], int]:
    """The JSON of each event and the number of comment lines in an event-stream body."""
    found, comments = [], 0
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        comments += sum(1 for line in lines if line.startswith(":"))
        data = [line[len("data:") :].strip() for line in lines if line.startswith("data:")]
        if data:
            found.append(json.loads("\n".join(data)))
    return found, comments


def drive_in_thread(database_url: str, steps: list[tuple[str, str]]) -> threading.Thread:
    """Run the SQL `steps` (statement, id) 1.2 s apart from a thread with its own connection: the
    test client runs a request to its end before it returns, so the writer cannot share its loop.
    """

    async def drive() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for sql, object_id in steps:
                await asyncio.sleep(1.2)  # more than two polls: every state is seen
                await conn.execute(sql, object_id)
        finally:
            await conn.close()

    thread = threading.Thread(target=asyncio.run, args=(drive(),), daemon=True)
    thread.start()
    return thread


async def test_video_events_follow_the_row_and_end_after_ready(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    caller = await new_caller(pool, "events")
    rid = await replica_row(pool, caller, settings.data_dir)
    vid = videos.new_id()
    await pool.execute(
        """INSERT INTO videos (video_id, tenant_id, replica_id, script)
           VALUES ($1, $2, $3, 'Hello.')""",
        vid,
        caller.tenant.id,
        rid,
    )
    set_ = "UPDATE videos SET updated_at = now(), "
    thread = drive_in_thread(
        settings.database_url,
        [
            (set_ + "status = 'generating', progress = 10 WHERE video_id = $1", vid),
            (set_ + "progress = 50 WHERE video_id = $1", vid),
            (set_ + "status = 'ready', progress = 100 WHERE video_id = $1", vid),
            # After the stream ended: never seen.
            (set_ + "status = 'error' WHERE video_id = $1", vid),
        ],
    )
    try:
        response = await client.get(f"/v2/videos/{vid}/events", headers=caller.headers)
    finally:
        await asyncio.to_thread(thread.join, 30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got, _ = parse_sse(response.text)
    assert [(e["status"], e["progress"]) for e in got] == [
        ("queued", 0),
        ("generating", 10),
        ("generating", 50),
        ("ready", 100),
    ]
    # Each event is what GET returns (the final one carries the share links).
    assert got[-1]["video_id"] == vid and got[-1]["hosted_url"].endswith(
        f"/watch/{vid}?t="
        + await pool.fetchval("SELECT share_token FROM videos WHERE video_id = $1", vid)
    )
    missing = await client.get("/v2/videos/v000000000000/events", headers=caller.headers)
    assert missing.status_code == 404
    assert (await client.get(f"/v2/videos/{vid}/events")).status_code == 401


async def test_events_of_a_deleted_video_and_of_a_training_replica(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    caller = await new_caller(pool, "events")
    rid = await replica_row(pool, caller, settings.data_dir, status="started")
    vid = videos.new_id()
    await pool.execute(
        """INSERT INTO videos (video_id, tenant_id, replica_id, script, status, progress)
           VALUES ($1, $2, $3, 'Hello.', 'generating', 20)""",
        vid,
        caller.tenant.id,
        rid,
    )
    thread = drive_in_thread(
        settings.database_url,
        [("UPDATE videos SET status = 'deleted' WHERE video_id = $1", vid)],
    )
    try:
        response = await client.get(f"/v2/videos/{vid}/events", headers=caller.headers)
    finally:
        await asyncio.to_thread(thread.join, 30)
    got, _ = parse_sse(response.text)
    assert [e["status"] for e in got] == ["generating", "deleted"]
    assert got[-1] == {"video_id": vid, "status": "deleted"}

    set_ = "UPDATE replicas SET updated_at = now(), "
    thread = drive_in_thread(
        settings.database_url,
        [
            (set_ + "training_progress = '37/100' WHERE replica_id = $1", rid),
            (set_ + "status = 'completed', training_progress = '100/100' "
             "WHERE replica_id = $1", rid),
        ],
    )  # fmt: skip
    try:
        response = await client.get(f"/v2/replicas/{rid}/events", headers=caller.headers)
    finally:
        await asyncio.to_thread(thread.join, 30)
    got, _ = parse_sse(response.text)
    assert [(e["status"], e["training_progress"]) for e in got] == [
        ("started", "0/100"),
        ("started", "37/100"),
        ("completed", "100/100"),
    ]
    assert got[0]["replica_id"] == rid and got[0]["thumbnail_url"] is None


async def test_the_feed_sends_keepalives_while_nothing_changes() -> None:
    states = iter(["a", "a", "a", "a", "a", "a", "a", "a", "done"])

    async def fetch() -> str | None:
        return next(states)

    kinds = [
        (e.kind, e.snapshot)
        async for e in feeds.watch(
            fetch, key=lambda s: s, done=lambda s: s == "done", poll_s=0.01, keepalive_s=0.025
        )
    ]
    assert kinds[0] == ("change", "a") and kinds[-1] == ("change", "done")
    assert ("keepalive", None) in kinds[1:-1]
    assert all(k == ("keepalive", None) for k in kinds[1:-1])

    async def vanished() -> str | None:
        return None

    assert [e.kind async for e in feeds.watch(vanished, key=str, done=bool)] == ["gone"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_event_stream_stops_polling_when_the_client_leaves(
    pool: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real HTTP server: once the client hangs up, the row is not read any more."""
    caller = await new_caller(pool, "events")
    rid = await replica_row(pool, caller, settings.data_dir, status="started")
    reads = 0
    real_get = replicas.get

    async def counting_get(*args: Any) -> replicas.ReplicaRow:
        nonlocal reads
        reads += 1
        return await real_get(*args)

    monkeypatch.setattr(replicas, "get", counting_get)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
            await asyncio.sleep(0.05)
        async with (
            httpx.AsyncClient(timeout=10) as http,
            http.stream(
                "GET",
                f"http://127.0.0.1:{port}/v2/replicas/{rid}/events",
                headers=caller.headers,
            ) as stream,
        ):
            assert stream.status_code == 200
            # Held, not abandoned by a `break`: a dropped line iterator closes the connection.
            lines = stream.aiter_lines()
            line = await anext(lines)
            while not line.startswith("data:"):
                line = await anext(lines)
            assert json.loads(line[5:])["training_progress"] == "0/100"
            await asyncio.sleep(1.2)
            assert reads >= 3, "the stream polls while the client listens"
            await lines.aclose()
        await asyncio.sleep(1.0)  # let the server see the disconnect
        after = reads
        await asyncio.sleep(1.5)
        assert reads == after, "the stream kept polling after the client left"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(serving, 10)


# --- replica thumbnails -------------------------------------------------------------------------


@pytest.mark.data
async def test_a_new_replica_has_a_thumbnail_an_img_can_load(
    client: AsyncTestClient, pool: Any, settings: Settings
) -> None:
    clip = shared_file("talking", "obama", "obama_sent_01.mp4")
    caller = await new_caller(pool, "thumbs")
    created = await client.post(
        "/v2/replicas",
        files={"train_video": ("obama.mp4", clip.read_bytes(), "video/mp4")},
        data={"replica_name": "Obama"},
        headers=caller.headers,
    )
    assert created.status_code in (200, 201), created.text
    rid = created.json()["replica_id"]
    redis = await queue.connect(settings.redis_url)
    try:  # no worker here: take the training job off the queue again
        key = queue.job_id(queue.TRAIN_REPLICA, rid)
        await redis.zrem(queue.QUEUE_NAME, key)
        await redis.delete(f"arq:job:{key}")
    finally:
        await redis.aclose(close_connection_pool=True)

    body = (await client.get(f"/v2/replicas/{rid}", headers=caller.headers)).json()
    token = await pool.fetchval("SELECT share_token FROM replicas WHERE replica_id = $1", rid)
    assert body["thumbnail_url"].endswith(f"/v2/replicas/{rid}/thumbnail.jpg?t={token}")
    listed = (await client.get("/v2/replicas", headers=caller.headers)).json()
    assert listed["data"][0]["thumbnail_url"] == body["thumbnail_url"]
    img = await client.get(local(body["thumbnail_url"]))  # an <img>: no key
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(img.content)) as picture:
        assert picture.format == "JPEG" and 0 < picture.width <= 480 and picture.height > 0
        darkest, brightest = picture.convert("L").getextrema()
    assert brightest - darkest > 80, "a real frame (a person), not a black or blank one"
    keyed = await client.get(f"/v2/replicas/{rid}/thumbnail.jpg", headers=caller.headers)
    assert keyed.status_code == 200 and keyed.content == img.content
    assert (await client.get(f"/v2/replicas/{rid}/thumbnail.jpg?t=x")).status_code == 404
    assert (await client.get(f"/v2/replicas/{rid}/thumbnail.jpg")).status_code == 401
    folder = settings.data_dir / str(caller.tenant.id) / "replicas" / rid
    assert sorted(p.name for p in folder.iterdir()) == ["sources", "thumbnail.jpg"]

    assert (await client.delete(f"/v2/replicas/{rid}", headers=caller.headers)).status_code == 200
    assert (await client.get(local(body["thumbnail_url"]))).status_code == 404


def test_a_video_without_a_frame_gives_no_thumbnail(tmp_path: Path) -> None:
    audio_only = tmp_path / "a.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1",
         "-c:a", "aac", str(audio_only)],
        check=True,
    )  # fmt: skip
    jpg = tmp_path / "thumbnail.jpg"
    assert replicas.write_thumbnail(audio_only, jpg) is False
    assert list(tmp_path.iterdir()) == [audio_only]
    short = tmp_path / "short.mp4"
    make_mp4(short, seconds=1)
    assert replicas.write_thumbnail(short, jpg) is True
    with Image.open(jpg) as picture:
        assert picture.size == (320, 240)


# --- jobs held by dead workers ------------------------------------------------------------------


async def test_the_sweep_unlocks_only_jobs_of_dead_workers(settings: Settings) -> None:
    redis = await queue.connect(settings.redis_url)
    lock = "arq:in-progress:"
    hour_ms = 3600 * 1000
    timeout_s = 3600.0
    ids = {
        "dead": f"{queue.RENDER_VIDEO}:vdead",
        "alive": f"{queue.RENDER_VIDEO}:valive",
        "mine": f"{queue.TRAIN_REPLICA}:rmine",
        "fresh": f"{queue.RENDER_VIDEO}:vfresh",
        "orphan": f"{queue.TRANSCRIBE}:orphan",
        "foreign": "someone_else:42",
    }
    try:
        for job_id in ids.values():
            await redis.psetex(lock + job_id, hour_ms, b"1")
        await redis.pexpire(lock + ids["orphan"], hour_ms - 120_000)  # locked 2 min ago
        await redis.pexpire(lock + ids["foreign"], 1000 * 30)
        await redis.set(queue.WORKER_KEY_PREFIX + "w-alive", "1", ex=30)
        await redis.hset(
            queue.RUNNING_KEY,
            mapping={ids["dead"]: "w-dead", ids["alive"]: "w-alive", ids["mine"]: "w-me"},
        )
        await redis.hset(queue.RUNNING_KEY, f"{queue.RENDER_VIDEO}:vdone", "w-dead")  # no lock

        reclaimed = await recovery.reclaim(redis, "w-me", timeout_s)
        assert sorted(reclaimed) == sorted([ids["dead"], ids["orphan"]])
        for name in ("alive", "mine", "fresh", "foreign"):
            assert await redis.exists(lock + ids[name]), name
        for name in ("dead", "orphan"):
            assert not await redis.exists(lock + ids[name]), name
        owners = await redis.hgetall(queue.RUNNING_KEY)
        assert {k.decode(): v.decode() for k, v in owners.items()} == {
            ids["alive"]: "w-alive",
            ids["mine"]: "w-me",
        }
        assert await recovery.reclaim(redis, "w-me", timeout_s) == []
    finally:
        await redis.delete(
            *(lock + j for j in ids.values()),
            queue.RUNNING_KEY,
            queue.WORKER_KEY_PREFIX + "w-alive",
        )
        await redis.aclose(close_connection_pool=True)


async def test_liveness_key_lives_with_the_worker(settings: Settings) -> None:
    live = recovery.Liveness(settings.redis_url, "w-test", heartbeat=False)
    redis = await queue.connect(settings.redis_url)
    try:
        live.start()
        ttl = await redis.ttl(queue.WORKER_KEY_PREFIX + "w-test")
        assert 0 < ttl <= queue.HEARTBEAT_TTL_S
        assert not await redis.exists(queue.HEARTBEAT_KEY)  # only long-running workers set it
        await asyncio.to_thread(live.stop)
        assert not await redis.exists(queue.WORKER_KEY_PREFIX + "w-test")
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_job_records_its_owner_while_it_runs(settings: Settings) -> None:
    redis = await queue.connect(settings.redis_url)
    job_id = f"{queue.RENDER_VIDEO}:vowned"
    seen: list[bytes | None] = []

    async def job(ctx: dict[str, Any], video_id: str) -> str:
        seen.append(await redis.hget(queue.RUNNING_KEY, job_id))
        if video_id == "taken over":  # another worker re-ran it meanwhile: its entry stays
            await redis.hset(queue.RUNNING_KEY, job_id, "w-other")
        return video_id

    ctx = {"redis": redis, "job_id": job_id, "worker_id": "w-me"}
    try:
        assert await recovery.owned(job)(ctx, "vowned") == "vowned"
        assert seen == [b"w-me"]
        assert not await redis.hexists(queue.RUNNING_KEY, job_id)
        await recovery.owned(job)(ctx, "taken over")
        assert await redis.hget(queue.RUNNING_KEY, job_id) == b"w-other"
    finally:
        await redis.delete(queue.RUNNING_KEY)
        await redis.aclose(close_connection_pool=True)
