"""Audio-driven videos: `POST /v2/videos` with a multipart `audio` file or JSON `audio_url`
instead of a script. A real recording (the sound of an Obama clip) is stored under the video's
id; files that are not audio, both or neither of script and audio, private URLs and uploads over
the limit answer 4xx and keep nothing. (Rendering from audio: tests/test_replicas_videos.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.domain import replicas
from doppel.platform import queue
from doppel.settings import Settings
from tests.conftest import Caller, lavfi_wav, shared_file
from tests.http_files import FileServer, serve_files


async def ffmpeg_out(*args: str) -> bytes:
    """What ffmpeg writes to stdout for `args` (inputs and output options, `pipe:1` last)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, args
    return out


async def speech_wav(clip: Path) -> bytes:
    """The sound of a real clip as a 16 kHz mono WAV."""
    return await ffmpeg_out("-i", str(clip), "-vn", "-ac", "1", "-ar", "16000", "-f", "wav",
                            "pipe:1")  # fmt: skip


async def _completed(pool: Any, caller: Caller) -> str:
    """A completed replica row (no files: nothing here renders it)."""
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths, status)
           VALUES ($1, $2, 'speaker', '/nonexistent', '{}', 'completed')""",
        rid,
        caller.tenant.id,
    )
    return rid


async def _take_off_queue(settings: Settings, video_id: str) -> None:
    """Rendering is not these tests' business: the job leaves the queue again."""
    redis = await queue.connect(settings.redis_url)
    try:
        key = queue.job_id(queue.RENDER_VIDEO, video_id)
        assert await redis.zrem(queue.QUEUE_NAME, key) == 1
        await redis.delete(f"arq:job:{key}")
    finally:
        await redis.aclose(close_connection_pool=True)


def _stored(settings: Settings, caller: Caller) -> list[str]:
    folder = settings.data_dir / str(caller.tenant.id) / "videos"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serve_files() as box:
        yield box


@pytest.mark.data
async def test_an_uploaded_recording_is_stored_under_the_video_id(
    client: AsyncTestClient, caller: Caller, pool: Any, settings: Settings
) -> None:
    rid = await _completed(pool, caller)
    wav = await speech_wav(shared_file("talking", "obama", "obama_sent_06.mp4"))
    response = await client.post(
        "/v2/videos",
        files={"audio": ("../../my speech.wav", wav, "audio/wav")},
        data={"replica_id": rid, "video_name": "from audio", "disclosure_mark": "false"},
        headers=caller.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    vid = response.json()["video_id"]
    await _take_off_queue(settings, vid)
    row = await pool.fetchrow("SELECT * FROM videos WHERE video_id = $1", vid)
    assert row["script"] is None and row["video_name"] == "from audio"
    assert row["disclosure_mark"] is False
    stored = Path(row["audio_path"])
    assert stored == settings.data_dir / str(caller.tenant.id) / "videos" / f"{vid}.input.wav"
    assert await asyncio.to_thread(stored.read_bytes) == wav
    assert _stored(settings, caller) == [f"{vid}.input.wav"]
    got = await client.get(f"/v2/videos/{vid}", headers=caller.headers)
    assert got.json()["status"] == "queued" and got.json()["video_name"] == "from audio"
    # Deleting the video removes its input too.
    assert (await client.delete(f"/v2/videos/{vid}", headers=caller.headers)).status_code == 200
    assert _stored(settings, caller) == []


@pytest.mark.data
async def test_an_audio_url_is_fetched_and_private_ones_refused(
    client: AsyncTestClient,
    caller: Caller,
    pool: Any,
    settings: Settings,
    server: FileServer,
) -> None:
    base, served = server.base + "/files", server.files
    served["talk.mp3"] = await ffmpeg_out(
        "-i", str(shared_file("talking", "obama", "obama_sent_06.mp4")), "-vn", "-f", "mp3",
        "pipe:1",
    )  # fmt: skip
    rid = await _completed(pool, caller)
    refused = await client.post(
        "/v2/videos",
        json={"replica_id": rid, "audio_url": f"{base}/talk.mp3"},
        headers=caller.headers,
    )
    assert refused.status_code == 422 and "loopback" in refused.json()["detail"]
    assert "`audio_url`" in refused.json()["detail"]
    metadata = await client.post(
        "/v2/videos",
        json={"replica_id": rid, "audio_url": "http://169.254.169.254/latest/speech.wav"},
        headers=caller.headers,
    )
    assert metadata.status_code == 422 and "link-local" in metadata.json()["detail"]
    allowed = dataclasses.replace(settings, allow_private_urls=True)
    async with AsyncTestClient(app=create_app(allowed), timeout=60) as c:
        made = await c.post(
            "/v2/videos",
            json={"replica_id": rid, "audio_url": f"{base}/talk.mp3"},
            headers=caller.headers,
        )
        missing = await c.post(
            "/v2/videos",
            json={"replica_id": rid, "audio_url": f"{base}/gone.wav"},
            headers=caller.headers,
        )
    assert made.status_code == 200, made.text
    vid = made.json()["video_id"]
    await _take_off_queue(settings, vid)
    assert _stored(settings, caller) == [f"{vid}.input.mp3"]
    assert missing.status_code == 422 and "HTTP 404" in missing.json()["detail"]


async def test_files_that_are_not_audio_are_422_and_nothing_is_kept(
    client: AsyncTestClient, caller: Caller, pool: Any, settings: Settings
) -> None:
    rid = await _completed(pool, caller)
    jpeg = await ffmpeg_out("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1",
                            "-f", "image2", "-c:v", "mjpeg", "pipe:1")  # fmt: skip
    silent_video = await ffmpeg_out("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1",
                                    "-c:v", "libx264", "-f", "matroska", "pipe:1")  # fmt: skip
    for name, data, why in [
        ("speech.wav", b"Dear team, here is the text of my speech. " * 40, "not audio"),
        ("speech.jpg", jpeg, "no audio track"),
        ("speech.mkv", silent_video, "no audio track"),
        ("blip.wav", await lavfi_wav("sine=frequency=440", 0.2), "more than 0.3 s"),
        ("empty.wav", b"", "empty"),
    ]:
        response = await client.post(
            "/v2/videos",
            files={"audio": (name, data, "audio/wav")},
            data={"replica_id": rid},
            headers=caller.headers,
        )
        assert response.status_code == 422, (name, response.text)
        assert why in response.json()["detail"], (name, response.json())
    count = await pool.fetchval(
        "SELECT count(*) FROM videos WHERE tenant_id = $1", caller.tenant.id
    )
    assert count == 0 and _stored(settings, caller) == []
    assert not list(settings.data_dir.glob(".fetch-*"))


async def test_a_script_or_audio_exactly_one(
    client: AsyncTestClient, caller: Caller, pool: Any, settings: Settings
) -> None:
    rid = await _completed(pool, caller)
    tone = await lavfi_wav("sine=frequency=220", 1.0)
    neither = await client.post("/v2/videos", json={"replica_id": rid}, headers=caller.headers)
    assert neither.status_code == 422
    assert "Send a script or audio" in neither.json()["detail"]
    neither_form = await client.post(
        "/v2/videos", data={"replica_id": rid, "video_name": "x"}, headers=caller.headers
    )
    assert neither_form.status_code == 422
    assert "Send a script or audio" in neither_form.json()["detail"]
    both_json = await client.post(
        "/v2/videos",
        json={"replica_id": rid, "script": "Hello.", "audio_url": "http://93.184.216.34/a.wav"},
        headers=caller.headers,
    )
    assert both_json.status_code == 422 and "not both" in both_json.json()["detail"]
    both_form = await client.post(
        "/v2/videos",
        files={"audio": ("a.wav", tone, "audio/wav")},
        data={"replica_id": rid, "script": "Hello."},
        headers=caller.headers,
    )
    assert both_form.status_code == 422 and "not both" in both_form.json()["detail"]
    both_audio = await client.post(
        "/v2/videos",
        files={"audio": ("a.wav", tone, "audio/wav")},
        data={"replica_id": rid, "audio_url": "http://93.184.216.34/a.wav"},
        headers=caller.headers,
    )
    assert both_audio.status_code == 422 and "not both" in both_audio.json()["detail"]
    # The replica is checked before anything is stored.
    unknown = await client.post(
        "/v2/videos",
        files={"audio": ("a.wav", tone, "audio/wav")},
        data={"replica_id": "r000000000000"},
        headers=caller.headers,
    )
    assert unknown.status_code == 404
    text_as_file = await client.post(
        "/v2/videos",
        files={"replica_id": ("id.txt", rid.encode(), "text/plain")},
        data={"script": "Hello."},
        headers=caller.headers,
    )
    assert text_as_file.status_code == 422 and "replica_id" in text_as_file.json()["detail"]
    count = await pool.fetchval(
        "SELECT count(*) FROM videos WHERE tenant_id = $1", caller.tenant.id
    )
    assert count == 0 and _stored(settings, caller) == []
    # A script in a multipart form still makes a video.
    scripted = await client.post(
        "/v2/videos", data={"replica_id": rid, "script": "Hello there."}, headers=caller.headers
    )
    assert scripted.status_code == 200, scripted.text
    await _take_off_queue(settings, scripted.json()["video_id"])


async def test_an_audio_upload_over_the_limit_is_413(
    settings: Settings, caller: Caller, pool: Any
) -> None:
    rid = await _completed(pool, caller)
    tight = dataclasses.replace(settings, max_upload_bytes=64 * 1024)
    tone = await lavfi_wav("sine=frequency=220", 8.0)  # 8 s of 16-bit 44.1 kHz: ~700 KiB
    async with AsyncTestClient(app=create_app(tight), timeout=60) as c:
        response = await c.post(
            "/v2/videos",
            files={"audio": ("long.wav", tone, "audio/wav")},
            data={"replica_id": rid},
            headers=caller.headers,
        )
    assert response.status_code == 413, response.text
    count = await pool.fetchval(
        "SELECT count(*) FROM videos WHERE tenant_id = $1", caller.tenant.id
    )
    assert count == 0 and _stored(settings, caller) == []
