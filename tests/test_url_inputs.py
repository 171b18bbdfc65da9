"""URL inputs (`train_video_url`, `consent_video_url`, `audio_url`): doppel.platform.fetch against
a real
local HTTP server (redirects, size and time limits, HTTP errors), and `POST /v2/replicas` with
URLs: private addresses refused, a served Obama clip making a replica, and bad URLs answering 4xx
with nothing kept."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.errors import InvalidRequest, PayloadTooLarge
from doppel.platform import fetch, queue
from doppel.settings import Settings
from tests.conftest import Caller, shared_file
from tests.http_files import FileServer, serve_files

CLIP = ("talking", "obama", "obama_sent_05.mp4")


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serve_files() as box:
        yield box


async def _get(url: str, dest: Path, **kw: Any) -> int:
    options: dict[str, Any] = {"max_bytes": 1 << 20, "timeout_s": 10.0, "allow_private": True}
    return await fetch.fetch(url, dest, **(options | kw), field="train_video_url")


# --- doppel.platform.fetch ------------------------------------------------------------------------


async def test_a_file_is_fetched_through_a_redirect(server: FileServer, tmp_path: Path) -> None:
    server.files["a.bin"] = b"x" * 300_000
    dest = tmp_path / "got"
    url = f"{server.base}/redirect?to=/files/a.bin"
    assert await _get(url, dest) == 300_000
    assert dest.read_bytes() == server.files["a.bin"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/v.mp4", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/v.mp4", "private"),
        ("http://[::1]/v.mp4", "loopback"),
        ("file:///etc/passwd", "http or https"),
    ],
)
async def test_addresses_doppel_must_not_reach_are_refused_before_connecting(
    url: str, why: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest, match=why) as caught:
        await _get(url, tmp_path / "got", allow_private=False)
    assert "train_video_url" in caught.value.message
    assert not (tmp_path / "got").exists()


async def test_every_redirect_hop_is_checked_and_loops_end(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "got"
    with pytest.raises(InvalidRequest, match="http or https"):
        await _get(f"{server.base}/redirect?to=ftp://example.com/v.mp4", dest)
    with pytest.raises(InvalidRequest, match="redirected more than 5 times"):
        await _get(f"{server.base}/loop", dest)
    assert not dest.exists()


async def test_limits_and_http_errors_answer_4xx_and_leave_nothing(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "got"
    server.files["big.bin"] = b"\0" * 300_000
    with pytest.raises(PayloadTooLarge, match="larger than 256 KiB") as by_header:
        await _get(f"{server.base}/files/big.bin", dest, max_bytes=256 * 1024)
    assert "DOPPEL_MAX_UPLOAD_BYTES" in by_header.value.message
    with pytest.raises(PayloadTooLarge, match="larger than 512 KiB"):  # counted, not announced
        await _get(f"{server.base}/endless", dest, max_bytes=512 * 1024)
    with pytest.raises(InvalidRequest, match="HTTP 404 Not Found"):
        await _get(f"{server.base}/files/missing.mp4", dest)
    with pytest.raises(InvalidRequest, match="longer than 0.5 s"):
        await _get(f"{server.base}/slow", dest, timeout_s=0.5)
    with pytest.raises(InvalidRequest, match="could not be downloaded"):
        await _get("http://127.0.0.1:9/nothing-listens-here", dest)
    assert not dest.exists()


# --- POST /v2/replicas with URLs ---------------------------------------------------------------


async def _drop_queued(settings: Settings, pool: Any, tenant_id: Any) -> None:
    """Take this tenant's train jobs off the queue (training is not these tests' business)."""
    redis = await queue.connect(settings.redis_url)
    try:
        for row in await pool.fetch(
            "SELECT replica_id FROM replicas WHERE tenant_id = $1", tenant_id
        ):
            key = queue.job_id(queue.TRAIN_REPLICA, row["replica_id"])
            await redis.zrem(queue.QUEUE_NAME, key)
            await redis.delete(f"arq:job:{key}")
    finally:
        await redis.aclose(close_connection_pool=True)


async def _nothing_kept(pool: Any, settings: Settings, caller: Caller) -> None:
    count = await pool.fetchval(
        "SELECT count(*) FROM replicas WHERE tenant_id = $1", caller.tenant.id
    )
    assert count == 0
    assert not list((settings.data_dir / str(caller.tenant.id)).glob("replicas/*"))
    assert not list(settings.data_dir.glob(".fetch-*"))  # no scratch folder left


async def test_private_urls_are_refused_with_a_clear_message(
    client: AsyncTestClient, caller: Caller, pool: Any, settings: Settings
) -> None:
    for field, url, why in [
        ("train_video_url", "http://127.0.0.1:8000/me.mp4", "loopback"),
        ("train_video_url", "http://169.254.169.254/latest/meta-data/", "link-local"),
        ("consent_video_url", "http://169.254.169.254/consent.mp4", "link-local"),
    ]:
        # Every URL is checked before anything is fetched (93.184.216.34 is public).
        doc = {"replica_name": "Ann Lee", "train_video_url": "http://93.184.216.34/x.mp4"}
        doc[field] = url
        response = await client.post("/v2/replicas", json=doc, headers=caller.headers)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert f"`{field}`" in detail and why in detail and "DOPPEL_ALLOW_PRIVATE_URLS" in detail
    await _nothing_kept(pool, settings, caller)


@pytest.mark.data
async def test_a_served_clip_makes_a_replica_and_bad_urls_are_4xx(
    settings: Settings, caller: Caller, pool: Any, server: FileServer
) -> None:
    clip = shared_file(*CLIP).read_bytes()
    server.files["talk.mp4"] = clip
    server.files["notes.mp4"] = b"this is not a video " * 100
    allowed = dataclasses.replace(settings, allow_private_urls=True, max_upload_bytes=4 << 20)
    async with AsyncTestClient(app=create_app(allowed), timeout=60) as c:

        async def post(doc: dict[str, Any]) -> Any:
            return await c.post("/v2/replicas", json={"replica_name": "Ann Lee", **doc},
                                headers=caller.headers)  # fmt: skip

        missing = await post({"train_video_url": f"{server.base}/files/gone.mp4"})
        assert missing.status_code == 422 and "HTTP 404" in missing.json()["detail"]
        not_video = await post({"train_video_url": f"{server.base}/files/notes.mp4"})
        assert not_video.status_code == 422, not_video.text
        assert "could not be read as a video" in not_video.json()["detail"]
        zeros = await post({"train_video_url": f"{server.base}/endless"})  # 1 MiB: fits
        assert zeros.status_code == 422 and "video" in zeros.json()["detail"], zeros.text
        await _nothing_kept(pool, settings, caller)

        both = await c.post(
            "/v2/replicas",
            files={"train_video": ("a.mp4", clip, "video/mp4")},
            data={"replica_name": "Ann Lee", "train_video_url": f"{server.base}/files/talk.mp4"},
            headers=caller.headers,
        )
        assert both.status_code == 422 and "not both" in both.json()["detail"]

        made = await post(
            {
                "train_video_url": f"{server.base}/redirect?to=/files/talk.mp4",
                "consent_video_url": f"{server.base}/files/talk.mp4",
            }
        )
        assert made.status_code == 200, made.text
        assert made.json()["status"] == "started"
    rid = made.json()["replica_id"]
    await _drop_queued(settings, pool, caller.tenant.id)
    row = await pool.fetchrow("SELECT * FROM replicas WHERE replica_id = $1", rid)
    assert row["replica_type"] == "user" and row["replica_name"] == "Ann Lee"
    (train,) = [Path(p) for p in row["train_paths"]]
    # Stored under the replica's id, never under a name from the URL.
    assert train == Path(row["folder"]) / "sources" / "0.mp4" and Path(row["folder"]).name == rid
    assert train.read_bytes() == clip
    assert Path(row["consent_path"]).name == "consent.mp4"
    assert not list(settings.data_dir.glob(".fetch-*"))


async def test_a_url_over_the_size_limit_is_413(
    settings: Settings, caller: Caller, pool: Any, server: FileServer
) -> None:
    server.files["big.mp4"] = b"\0" * (256 * 1024)
    tight = dataclasses.replace(settings, allow_private_urls=True, max_upload_bytes=64 * 1024)
    async with AsyncTestClient(app=create_app(tight), timeout=60) as c:
        response = await c.post(
            "/v2/replicas",
            json={"replica_name": "Ann Lee", "train_video_url": f"{server.base}/files/big.mp4"},
            headers=caller.headers,
        )
    assert response.status_code == 413, response.text
    assert "larger than 64 KiB" in response.json()["detail"]
    await _nothing_kept(pool, settings, caller)


async def test_bodies_that_cannot_be_read_are_422(client: AsyncTestClient, caller: Caller) -> None:
    no_video = await client.post(
        "/v2/replicas", json={"replica_name": "Ann Lee"}, headers=caller.headers
    )
    assert no_video.status_code == 422 and "train_video_url" in no_video.json()["detail"]
    no_name = await client.post(
        "/v2/replicas",
        json={"train_video_url": "http://93.184.216.34/me.mp4"},
        headers=caller.headers,
    )
    assert no_name.status_code == 422 and "replica_name" in no_name.json()["detail"]
    garbage = await client.post(
        "/v2/replicas",
        content=b"{not json",
        headers={**caller.headers, "content-type": "application/json"},
    )
    assert garbage.status_code == 422 and "not JSON" in garbage.json()["detail"]
    wrong_type = await client.post("/v2/replicas", json={"replica_name": 7}, headers=caller.headers)
    assert wrong_type.status_code == 422 and "replica_name" in wrong_type.json()["detail"]
