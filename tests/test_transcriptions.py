import re
import uuid

import pytest
from litestar.testing import AsyncTestClient

from doppel.platform import queue
from doppel.settings import Settings
from orchestrator.worker import build_worker
from tests.conftest import Caller, lavfi_wav, new_caller, shared_file

JFK_PHRASE = "ask not what your country can do for you"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).replace("  ", " ")


def _upload(path, name: str | None = None) -> dict:
    return {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}


async def test_sync_transcription_of_jfk(client: AsyncTestClient, caller: Caller) -> None:
    response = await client.post(
        "/v2/transcriptions",
        files=_upload(shared_file("speech", "jfk.flac")),
        headers=caller.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert JFK_PHRASE in _norm(body["text"])
    assert body["language"] == "en"
    assert body["status"] == "completed"
    assert 10.5 < body["duration_s"] < 11.5
    segments = body["segments"]
    assert segments and all(s["start"] <= s["end"] for s in segments)
    assert segments[-1]["end"] <= body["duration_s"] + 0.5
    # Recorded, and readable back by its owner.
    again = await client.get(
        f"/v2/transcriptions/{body['transcription_id']}", headers=caller.headers
    )
    assert again.status_code == 200 and again.json()["text"] == body["text"]


async def test_async_transcription_completes_through_the_worker(
    client: AsyncTestClient, caller: Caller, settings: Settings
) -> None:
    response = await client.post(
        "/v2/transcriptions?async=true",
        files=_upload(shared_file("speech", "jfk.flac")),
        headers=caller.headers,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and "text" not in body
    tid = body["transcription_id"]

    worker = build_worker(settings, burst=True)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_complete >= 1 and worker.jobs_failed == 0

    done = await client.get(f"/v2/transcriptions/{tid}", headers=caller.headers)
    assert done.status_code == 200
    result = done.json()
    assert result["status"] == "completed", result
    assert JFK_PHRASE in _norm(result["text"])
    assert result["completed_at"] is not None


async def test_enqueue_is_idempotent_per_transcription(
    client: AsyncTestClient, settings: Settings
) -> None:
    redis = await queue.connect(settings.redis_url)
    try:
        tid = uuid.uuid4()
        assert await queue.enqueue(redis, queue.TRANSCRIBE, tid) is True
        assert await queue.enqueue(redis, queue.TRANSCRIBE, tid) is False
        queued = await redis.queued_jobs(queue_name=queue.QUEUE_NAME)
        assert sum(1 for j in queued if j.job_id == queue.job_id(queue.TRANSCRIBE, tid)) == 1
        await redis.zrem(queue.QUEUE_NAME, queue.job_id(queue.TRANSCRIBE, tid))
        await redis.delete(f"arq:job:{queue.job_id(queue.TRANSCRIBE, tid)}")
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_another_tenants_transcription_is_404(
    client: AsyncTestClient, caller: Caller, pool: object
) -> None:
    response = await client.post(
        "/v2/transcriptions?async=true",
        files=_upload(shared_file("speech", "jfk.flac")),
        headers=caller.headers,
    )
    tid = response.json()["transcription_id"]
    other = await new_caller(pool, "other")
    denied = await client.get(f"/v2/transcriptions/{tid}", headers=other.headers)
    assert denied.status_code == 404
    assert tid in denied.json()["detail"]
    assert (
        await client.get(f"/v2/transcriptions/{tid}", headers=caller.headers)
    ).status_code == 200


@pytest.mark.parametrize("async_", ["false", "true"])
async def test_unreadable_audio_is_422_and_nothing_is_written(
    client: AsyncTestClient, caller: Caller, pool: object, async_: str
) -> None:
    files = {"file": ("notes.mp3", b"definitely not an mp3 " * 200, "audio/mpeg")}
    response = await client.post(
        f"/v2/transcriptions?async={async_}", files=files, headers=caller.headers
    )
    assert response.status_code == 422
    assert "could not be read as audio" in response.json()["detail"]
    count = await pool.fetchval(
        "SELECT count(*) FROM transcriptions WHERE tenant_id = $1",  # type: ignore[attr-defined]
        caller.tenant.id,
    )
    assert count == 0


async def test_silent_audio_is_422(client: AsyncTestClient, caller: Caller) -> None:
    wav = await lavfi_wav("anullsrc=r=16000:cl=mono", 3)
    response = await client.post(
        "/v2/transcriptions",
        files={"file": ("quiet.wav", wav, "audio/wav")},
        headers=caller.headers,
    )
    assert response.status_code == 422
    assert "silent" in response.json()["detail"]


async def test_video_without_audio_is_422(client: AsyncTestClient, caller: Caller) -> None:
    clip = next(shared_file("talking", "obama").glob("*05*.mp4"))
    response = await client.post("/v2/transcriptions", files=_upload(clip), headers=caller.headers)
    assert response.status_code == 422
    assert "no audio track" in response.json()["detail"]


async def test_missing_file_field_is_4xx(client: AsyncTestClient, caller: Caller) -> None:
    response = await client.post(
        "/v2/transcriptions", data={"language": "en"}, headers=caller.headers
    )
    assert 400 <= response.status_code < 500


async def test_bad_language_is_422(client: AsyncTestClient, caller: Caller) -> None:
    response = await client.post(
        "/v2/transcriptions",
        files=_upload(shared_file("speech", "jfk.flac")),
        data={"language": "english please"},
        headers=caller.headers,
    )
    assert response.status_code == 422
    assert "ISO 639-1" in response.json()["detail"]
