"""Signed webhooks and URL safety (issue 6, items 4 and 6): signatures, the address checks, and
deliveries end to end (a status change -> the real worker -> a real HTTP receiver on 127.0.0.1),
with a retry after a 500. No replica is trained: the status changes are made directly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from doppel.domain import replicas, videos, webhooks
from doppel.errors import InvalidRequest
from doppel.platform import queue, urls
from doppel.settings import Settings
from orchestrator.worker import build_worker
from tests.conftest import Caller, Receiver, webhook_receiver

SECRET = "whsec_test"


# --- signatures --------------------------------------------------------------------------------


def test_a_signature_verifies_and_names_its_time() -> None:
    body = b'{"event":"video.ready"}'
    header = webhooks.sign(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert webhooks.verify_signature(SECRET, header, body, now=1_700_000_010)
    assert webhooks.verify_signature(SECRET, header, body.decode(), now=1_700_000_010)
    assert webhooks.verify_signature(SECRET, webhooks.sign(SECRET, body), body)


def test_a_tampered_body_a_wrong_secret_or_a_stale_time_fails() -> None:
    body = b'{"event":"video.ready"}'
    now = time.time()
    header = webhooks.sign(SECRET, body, timestamp=int(now))
    assert not webhooks.verify_signature(SECRET, header, b'{"event":"video.error"}', now=now)
    assert not webhooks.verify_signature("whsec_other", header, body, now=now)
    assert not webhooks.verify_signature(SECRET, header, body, now=now + 301)
    assert webhooks.verify_signature(SECRET, header, body, tolerance_s=600, now=now + 301)
    assert not webhooks.verify_signature(SECRET, header.split(",")[1], body, now=now)
    assert not webhooks.verify_signature(SECRET, "", body)
    assert not webhooks.verify_signature(SECRET, "t=abc,v1=00", body)


# --- URL safety --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.5:8080/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:9000/hook", "loopback"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("ftp://93.184.216.34/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http:///nohost", "no host"),
    ],
)
async def test_urls_doppel_must_not_reach_are_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        await urls.check_url(url, field="callback_url")
    assert reason in err.value.message and "callback_url" in err.value.message


async def test_public_literals_pass_without_a_lookup_and_private_ones_when_allowed() -> None:
    assert await urls.check_url(" http://93.184.216.34/hook ") == "http://93.184.216.34/hook"
    assert await urls.check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/h")
    assert await urls.check_url("http://127.0.0.1:9/hook", allow_private=True)
    # A name is resolved: "localhost" is loopback.
    with pytest.raises(InvalidRequest, match="loopback"):
        await urls.check_url("http://localhost:8080/hook")


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as box:
        yield box


def fast(settings: Settings) -> Settings:
    return dataclasses.replace(settings, allow_private_urls=True, webhook_backoff_s=(0.2,) * 5)


async def run_worker(settings: Settings) -> Any:
    worker = build_worker(settings, burst=True, poll_delay=0.1)
    try:
        await asyncio.wait_for(worker.main(), timeout=30)
    finally:
        await worker.close()
    return worker


async def _replica(pool: Any, caller: Caller, status: str, callback_url: str | None) -> str:
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths,
                                 status, callback_url)
           VALUES ($1, $2, 'hooked', '/nonexistent', '{}', $3, $4)""",
        rid,
        caller.tenant.id,
        status,
        callback_url,
    )
    return rid


async def test_a_status_change_reaches_the_receiver_signed(
    client: AsyncTestClient, pool: Any, settings: Settings, caller: Caller, receiver: Receiver
) -> None:
    s = fast(settings)
    rid = await _replica(pool, caller, "started", receiver.url)
    redis = await queue.connect(s.redis_url)
    try:
        notify = webhooks.Notifier(redis, s.public_url)
        await replicas.fail(pool, rid, "the camera was off", notify)
        # The same status again makes no second delivery.
        assert await notify.changed(pool, "replica", rid) is None
        worker = await run_worker(s)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert worker.jobs_failed == 0
    assert len(receiver.got) == 1
    headers, body = receiver.got[0]
    secret = (await client.get("/v2/webhook-secret", headers=caller.headers)).json()
    assert secret["webhook_secret"].startswith("whsec_") and len(secret["webhook_secret"]) > 40
    assert webhooks.verify_signature(secret["webhook_secret"], headers["x-doppel-signature"], body)
    assert not webhooks.verify_signature("whsec_other", headers["x-doppel-signature"], body)
    sent = json.loads(body)
    assert sent.pop("event") == "replica.error" == headers["x-doppel-event"]
    got = await client.get(f"/v2/replicas/{rid}", headers=caller.headers)
    assert sent == got.json()  # the object GET returns
    assert sent["error_message"] == "the camera was off"
    listed = await client.get(f"/v2/webhook-deliveries?object_id={rid}", headers=caller.headers)
    assert listed.status_code == 200, listed.text
    (delivery,) = listed.json()["data"]
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    assert delivery["delivered_at"] and delivery["next_attempt_at"] is None
    assert delivery["event"] == "replica.error" and delivery["url"] == receiver.url


async def test_a_failed_delivery_is_retried_and_every_attempt_recorded(
    client: AsyncTestClient, pool: Any, settings: Settings, caller: Caller, receiver: Receiver
) -> None:
    s = fast(settings)
    rid = await _replica(pool, caller, "completed", None)
    vid = videos.new_id()
    await pool.execute(
        """INSERT INTO videos (video_id, tenant_id, replica_id, script, callback_url)
           VALUES ($1, $2, $3, 'Hello there.', $4)""",
        vid,
        caller.tenant.id,
        rid,
        receiver.url,
    )
    receiver.answers = [500]
    redis = await queue.connect(s.redis_url)
    try:
        notify = webhooks.Notifier(redis, s.public_url)
        await videos.fail(pool, vid, "no voice", notify)
        worker = await run_worker(s)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert worker.jobs_failed == 0
    assert len(receiver.got) == 2
    assert receiver.got[0][1] == receiver.got[1][1]  # the same body, signed each time
    secret = await webhooks.secret_of(pool, caller.tenant.id)
    for headers, body in receiver.got:
        assert webhooks.verify_signature(secret, headers["x-doppel-signature"], body)
        assert json.loads(body)["event"] == "video.error"
    listed = await client.get("/v2/webhook-deliveries", headers=caller.headers)
    (delivery,) = listed.json()["data"]
    assert delivery["object_id"] == vid and delivery["object_type"] == "video"
    assert delivery["attempts"] == 2 and delivery["last_status_code"] == 200
    assert delivery["delivered_at"] is not None
    got = await client.get(f"/v2/videos/{vid}", headers=caller.headers)
    sent = json.loads(receiver.got[0][1])
    assert set(sent) - {"event"} == set(got.json())


async def test_a_receiver_that_never_answers_2xx_is_given_up(
    pool: Any, settings: Settings, caller: Caller, receiver: Receiver
) -> None:
    s = dataclasses.replace(fast(settings), webhook_backoff_s=(0.1, 0.1))
    rid = await _replica(pool, caller, "started", receiver.url)
    receiver.answers = [503, 503, 503, 503]
    redis = await queue.connect(s.redis_url)
    try:
        await replicas.fail(pool, rid, "boom", webhooks.Notifier(redis, s.public_url))
        await run_worker(s)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert len(receiver.got) == 3  # the first attempt and one per backoff delay
    rows, total = await webhooks.list_page(pool, caller.tenant.id, 1, 10, rid)
    assert total == 1 and rows[0].attempts == 3 and rows[0].last_status_code == 503
    assert rows[0].delivered_at is None and rows[0].next_attempt_at is None
    assert rows[0].last_error and "503" in rows[0].last_error


async def test_private_callback_urls_are_422_unless_allowed(
    client: AsyncTestClient, caller: Caller, pool: Any
) -> None:
    rid = await _replica(pool, caller, "completed", None)
    for url, reason in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("ftp://93.184.216.34/hook", "http or https"),
    ]:
        response = await client.post(
            "/v2/videos",
            json={"replica_id": rid, "script": "Hello.", "callback_url": url},
            headers=caller.headers,
        )
        assert response.status_code == 422, response.text
        assert reason in response.json()["detail"]
    response = await client.post(
        "/v2/replicas",
        files={"train_video": ("a.mp4", b"not a video", "video/mp4")},
        data={"callback_url": "http://[::1]/hook"},
        headers=caller.headers,
    )
    assert response.status_code == 422 and "loopback" in response.json()["detail"]
    count = await pool.fetchval(
        "SELECT count(*) FROM videos WHERE tenant_id = $1", caller.tenant.id
    )
    assert count == 0


async def test_deliveries_are_tenant_scoped_and_paginated(
    client: AsyncTestClient, pool: Any, caller: Caller
) -> None:
    rid = await _replica(pool, caller, "started", "http://93.184.216.34/hook")
    notify = webhooks.Notifier(None, "http://doppel.example")  # recorded, not enqueued
    first = await notify.changed(pool, "replica", rid)
    await pool.execute("UPDATE replicas SET status = 'completed' WHERE replica_id = $1", rid)
    second = await notify.changed(pool, "replica", rid)
    assert first and second
    page1 = (await client.get("/v2/webhook-deliveries?limit=1", headers=caller.headers)).json()
    page2 = (
        await client.get("/v2/webhook-deliveries?limit=1&page=2", headers=caller.headers)
    ).json()
    assert page1["total_count"] == 2
    assert page1["data"][0]["delivery_id"] == str(second)  # newest first
    assert page2["data"][0]["delivery_id"] == str(first)
    assert page2["data"][0]["event"] == "replica.started"
    other = Caller(tenant=caller.tenant, key="dpl_nope")
    assert (await client.get("/v2/webhook-deliveries", headers=other.headers)).status_code == 401
    stranger = await _other(pool)
    seen = (await client.get("/v2/webhook-deliveries", headers=stranger.headers)).json()
    assert seen["total_count"] == 0
    # Nothing of these deliveries may be picked up by a later worker: mark them given up.
    await pool.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = NULL WHERE object_id = $1", rid
    )
    assert uuid.UUID(page1["data"][0]["delivery_id"])


async def test_tenants_made_before_the_migration_get_their_own_secret(
    pool: Any, settings: Settings, tmp_path: Any
) -> None:
    import asyncpg

    from doppel.platform import db

    name = f"webhooks_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE DATABASE {name}")
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    fresh = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        for path in db.migration_files():
            if path.name < "0004":
                (tmp_path / path.name).write_text(path.read_text())
        await db.migrate(fresh, tmp_path)
        for n in ("a", "b"):
            await fresh.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", uuid.uuid4(), n)
        applied = await db.migrate(fresh)  # 0004 and every later one
        assert applied[0] == "0004_webhooks.sql" and applied == sorted(applied)
        secrets = [r[0] for r in await fresh.fetch("SELECT webhook_secret FROM tenants")]
        assert len(set(secrets)) == 2 and all(len(x) == 70 for x in secrets), secrets
    finally:
        await fresh.close()
        await pool.execute(f"DROP DATABASE {name}")


async def _other(pool: Any) -> Caller:
    from tests.conftest import new_caller

    return await new_caller(pool, "stranger")
