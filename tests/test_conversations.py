"""Conversations (`/v2/conversations`) as records: created from a persona and its default replica,
listed by status and page, read with the live session's logs, ended once, deleted softly or for
good, and refused with a message for every bad field. Real PostgreSQL through the API; nobody
joins a call here (the live session is another module's)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.domain import conversations, replicas
from doppel.errors import InvalidRequest, NotFound
from doppel.settings import Settings
from tests.conftest import Caller, new_caller

#: A public address as an IP literal: checked without a DNS lookup (no internet here).
CALLBACK = "https://93.184.216.34/hooks/doppel"


async def _replica(pool: Any, caller: Caller, status: str = "completed") -> str:
    """A replica row in `status`, without training anything (no call is joined here)."""
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths, status)
           VALUES ($1, $2, 'fake', '/nonexistent', '{}', $3)""",
        rid,
        caller.tenant.id,
        status,
    )
    return rid


async def _persona(client: AsyncTestClient, caller: Caller, replica_id: str | None) -> str:
    body = {"system_prompt": "You are a friendly guide. Be brief.", "context": "A museum."}
    if replica_id is not None:
        body["default_replica_id"] = replica_id
    made = await client.post("/v2/personas", json=body, headers=caller.headers)
    assert made.status_code == 200, made.text
    return str(made.json()["persona_id"])


async def _count(pool: Any, caller: Caller) -> int:
    sql = "SELECT count(*) FROM conversations WHERE tenant_id = $1"
    return int(await pool.fetchval(sql, caller.tenant.id))


# --- pure logic ----------------------------------------------------------------------------------


def test_properties_take_defaults_and_refuse_what_doppel_does_not_run() -> None:
    defaults = {**conversations.PROPERTY_DEFAULTS, "enable_recording": False}
    assert conversations.check_properties(None) == defaults
    got = conversations.check_properties(
        {"max_call_duration": 60, "language": "English", "enable_closed_captions": False}
    )
    assert got == {**defaults, "max_call_duration": 60, "language": "en"}
    recorded = conversations.check_properties({"enable_recording": True})
    assert recorded == {**defaults, "enable_recording": True}
    for given, words in [
        ([1], "`properties` must be an object"),
        ({"max_call_duration": 0}, "`properties.max_call_duration` must be a whole number"),
        ({"max_call_duration": 99999}, "from 1 to 14400"),
        ({"participant_left_timeout": -1}, "`properties.participant_left_timeout`"),
        ({"participant_absent_timeout": "300"}, "`properties.participant_absent_timeout`"),
        ({"max_call_duration": True}, "got True"),
        ({"max_call_duration": 60.5}, "got 60.5"),
        ({"language": "french"}, "`properties.language` 'french'"),
        ({"language": 7}, "`properties.language` 7"),
        ({"enable_closed_captions": True}, "`properties.enable_closed_captions` is not supported"),
        ({"enable_recording": "yes"}, "`properties.enable_recording` must be true or false"),
        ({"apply_greenscreen": "yes"}, "`properties.apply_greenscreen` is not supported"),
        ({"enable_transcription": True}, "['enable_transcription']"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            conversations.check_properties(given)
        assert words in caught.value.message, (given, caught.value.message)


def test_a_request_is_checked_field_by_field_before_any_lookup() -> None:
    c = conversations.check_request(
        {"persona_id": " p1 ", "conversation_name": "  a   b ", "audio_only": True}
    )
    assert c.persona_id == "p1" and c.replica_id is None and c.conversation_name == "a b"
    assert c.audio_only and not c.test_mode and c.callback_url is None
    cases: list[tuple[dict[str, Any], str]] = [
        ({"persona_id": "p1", "room": "x"}, "Unknown conversation field(s) ['room']"),
        ({}, "`persona_id` is required"),
        ({"persona_id": 5}, "`persona_id` must be text"),
        ({"persona_id": "p1", "audio_only": "yes"}, "`audio_only` must be true or false"),
        ({"persona_id": "p1", "test_mode": 1}, "`test_mode` must be true or false"),
        ({"persona_id": "p1", "conversation_name": "n" * 201}, "at most 200"),
        ({"persona_id": "p1", "custom_greeting": "g" * 1001}, "at most 1000"),
        ({"persona_id": "p1", "callback_url": ["x"]}, "`callback_url` must be text"),
    ]
    for doc, words in cases:
        with pytest.raises(InvalidRequest) as caught:
            conversations.check_request(doc)
        assert words in caught.value.message, (doc, caught.value.message)


def test_the_call_url_carries_its_token_escaped() -> None:
    url = conversations.call_url("http://h:8000/", "c0123", "a+b/c")
    assert url == "http://h:8000/conversations/c0123?t=a%2Bb%2Fc"


# --- through the API -----------------------------------------------------------------------------


async def test_a_conversation_is_created_from_the_personas_replica_read_and_listed(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "conv")
    rid = await _replica(pool, owner)
    pid = await _persona(client, owner, rid)
    body = {
        "persona_id": pid,
        "conversation_name": "Museum tour",
        "conversational_context": "The visitor is ten years old.",
        "custom_greeting": "Hello! Where shall we start?",
        "callback_url": CALLBACK,
        "audio_only": True,
        "properties": {"max_call_duration": 600, "language": "english"},
    }
    made = await client.post("/v2/conversations", json=body, headers=owner.headers)
    assert made.status_code == 200, made.text
    got = made.json()
    cid = got["conversation_id"]
    assert cid.startswith("c") and len(cid) == 13
    assert got["conversation_name"] == "Museum tour" and got["status"] == "active"
    assert got["callback_url"] == CALLBACK and got["replica_id"] == rid
    assert got["persona_id"] == pid and got["created_at"]
    url = urlsplit(got["conversation_url"])
    assert url.path == f"/conversations/{cid}"
    token = parse_qs(url.query)["t"][0]
    assert len(token) == 22  # 16 random bytes, URL-safe base64

    # The call page's link opens it without the key; a wrong or foreign token is a 404.
    opened = await conversations.by_token(pool, cid, token)
    assert opened.conversation_id == cid and opened.properties["max_call_duration"] == 600
    with pytest.raises(NotFound):
        await conversations.by_token(pool, cid, token[:-1] + ("A" if token[-1] != "A" else "B"))

    read = await client.get(f"/v2/conversations/{cid}", headers=owner.headers)
    assert read.status_code == 200, read.text
    one = read.json()
    assert {k: one[k] for k in got} == got
    assert one["conversational_context"] == "The visitor is ten years old."
    assert one["custom_greeting"] == "Hello! Where shall we start?"
    assert one["audio_only"] is True and one["test_mode"] is False
    assert one["properties"] == {
        "max_call_duration": 600,
        "participant_left_timeout": 0,
        "participant_absent_timeout": 300,
        "language": "en",
        "enable_recording": False,
    }
    assert one["shutdown_reason"] is None and one["ended_at"] is None
    assert "events" not in one and "transcript" not in one  # verbose only

    # A replica named in the request is used over the persona's default; the name defaults.
    other_rid = await _replica(pool, owner)
    body = {"persona_id": pid, "replica_id": other_rid}
    second = await client.post("/v2/conversations", json=body, headers=owner.headers)
    assert second.status_code == 200, second.text
    assert second.json()["replica_id"] == other_rid
    assert second.json()["conversation_name"] == f"conversation {second.json()['conversation_id']}"
    listed = (await client.get("/v2/conversations", headers=owner.headers)).json()
    assert listed["total_count"] == 2
    assert [c["conversation_id"] for c in listed["data"]] == [second.json()["conversation_id"], cid]

    # Another tenant sees none of it.
    other = await new_caller(pool, "conv")
    for method, path in [
        ("get", f"/v2/conversations/{cid}"),
        ("post", f"/v2/conversations/{cid}/end"),
        ("delete", f"/v2/conversations/{cid}"),
    ]:
        response = await getattr(client, method)(path, headers=other.headers)
        assert response.status_code == 404 and cid in response.json()["detail"], response.text
    assert (await client.get("/v2/conversations", headers=other.headers)).json()["total_count"] == 0
    assert (await client.get("/v2/conversations")).status_code == 401
    assert (await client.get(f"/v2/conversations/{cid}", headers=owner.headers)).json() == one


async def test_the_list_filters_by_status_and_pages(client: AsyncTestClient, pool: Any) -> None:
    owner = await new_caller(pool, "conv")
    pid = await _persona(client, owner, await _replica(pool, owner))
    ids = []
    for i in range(4):
        made = await client.post(
            "/v2/conversations",
            json={"persona_id": pid, "conversation_name": f"call {i}", "test_mode": i % 2 == 1},
            headers=owner.headers,
        )
        assert made.status_code == 200, made.text
        ids.append(made.json()["conversation_id"])
    # Created within the same millisecond or not, the list is newest first by created_at.
    for i, cid in enumerate(ids):
        await pool.execute(
            "UPDATE conversations SET created_at = now() + make_interval(secs => $2) "
            "WHERE conversation_id = $1",
            cid,
            float(i),
        )

    async def listing(query: str) -> dict[str, Any]:
        response = await client.get(f"/v2/conversations{query}", headers=owner.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    everything = await listing("")
    assert everything["total_count"] == 4 and everything["page"] == 1
    assert [c["conversation_id"] for c in everything["data"]] == ids[::-1]
    ended = await listing("?status=ended")
    assert ended["total_count"] == 2 and [c["conversation_id"] for c in ended["data"]] == [
        ids[3],
        ids[1],
    ]
    assert all(c["shutdown_reason"] == "test_mode" for c in ended["data"])
    active = await listing("?status=active&limit=1&page=2")
    assert active["total_count"] == 2 and active["limit"] == 1
    assert [c["conversation_id"] for c in active["data"]] == [ids[0]]
    assert (await listing("?status=active&page=3&limit=1"))["data"] == []

    bad = await client.get("/v2/conversations?status=live", headers=owner.headers)
    assert bad.status_code == 422 and "`status` 'live'" in bad.json()["detail"]
    too_many = await client.get("/v2/conversations?limit=101", headers=owner.headers)
    assert too_many.status_code == 400


async def test_verbose_shows_what_the_live_session_recorded_and_an_end_is_final(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "conv")
    pid = await _persona(client, owner, await _replica(pool, owner))
    made = await client.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
    cid = made.json()["conversation_id"]
    url = f"/v2/conversations/{cid}"

    joined = {"message_type": "system", "event_type": "system.replica_joined", "properties": {}}
    await conversations.record_event(pool, cid, joined)
    heard = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await conversations.append_transcript(pool, cid, "user", "What is this painting?", heard)
    await conversations.append_transcript(pool, cid, "assistant", "A Vermeer.", heard)
    timings = {"transcript_s": 0.21, "llm_first_text_s": 0.48, "first_audio_s": 0.9}
    await conversations.record_turn(pool, cid, timings)
    with pytest.raises(ValueError, match="role"):
        await conversations.append_transcript(pool, cid, "replica", "x", heard)
    with pytest.raises(ValueError, match="event_type"):
        await conversations.record_event(pool, cid, {"properties": {}})
    with pytest.raises(NotFound):
        await conversations.record_turn(pool, "c000000000000", timings)

    verbose = (await client.get(f"{url}?verbose=true", headers=owner.headers)).json()
    assert verbose["events"] == [joined]
    assert verbose["turns"] == [timings]
    assert verbose["transcript"] == [
        {"role": "user", "content": "What is this painting?", "at": heard.isoformat()},
        {"role": "replica", "content": "A Vermeer.", "at": heard.isoformat()},
    ]
    plain = (await client.get(url, headers=owner.headers)).json()
    assert "events" not in plain and "turns" not in plain and "transcript" not in plain

    ended = await client.post(f"{url}/end", headers=owner.headers)
    assert ended.status_code == 200, ended.text
    first = ended.json()
    assert first["status"] == "ended" and first["ended_at"]
    assert first["shutdown_reason"] == "end_conversation_endpoint_hit"
    # Ending again, or a timeout in the live session afterwards, changes nothing.
    again = await client.post(f"{url}/end", headers=owner.headers)
    assert again.status_code == 200 and again.json() == first
    assert await conversations.set_ended(pool, cid, "max_call_duration reached") is False
    stays = (await client.get(url, headers=owner.headers)).json()
    assert stays["status"] == "ended" and stays["shutdown_reason"] == first["shutdown_reason"]
    assert stays["ended_at"] == first["ended_at"]

    # The live session ends an active one with its own reason, once.
    other = await client.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
    oid = other.json()["conversation_id"]
    assert await conversations.set_ended(pool, oid, "participant_left_timeout reached") is True
    assert await conversations.set_ended(pool, oid, "max_call_duration reached") is False
    left = (await client.get(f"/v2/conversations/{oid}", headers=owner.headers)).json()
    assert left["shutdown_reason"] == "participant_left_timeout reached"


async def test_a_conversation_is_deleted_softly_or_for_good(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "conv")
    pid = await _persona(client, owner, await _replica(pool, owner))
    soft, hard = [
        (
            await client.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
        ).json()["conversation_id"]
        for _ in range(2)
    ]
    gone = await client.delete(f"/v2/conversations/{soft}", headers=owner.headers)
    assert gone.status_code == 200
    assert gone.json() == {"conversation_id": soft, "status": "deleted"}
    for method, path in [
        ("get", f"/v2/conversations/{soft}"),
        ("post", f"/v2/conversations/{soft}/end"),
        ("delete", f"/v2/conversations/{soft}"),
    ]:
        assert (await getattr(client, method)(path, headers=owner.headers)).status_code == 404
    kept = await pool.fetchrow("SELECT * FROM conversations WHERE conversation_id = $1", soft)
    assert kept["deleted_at"] is not None and kept["status"] == "ended"
    assert kept["shutdown_reason"] == "conversation_deleted"
    with pytest.raises(NotFound):  # its call page no longer opens
        await conversations.by_token(pool, soft, kept["join_token"])

    wiped = await client.delete(f"/v2/conversations/{hard}?hard=true", headers=owner.headers)
    assert wiped.status_code == 200
    assert (
        await pool.fetchval("SELECT count(*) FROM conversations WHERE conversation_id = $1", hard)
        == 0
    )
    listed = (await client.get("/v2/conversations", headers=owner.headers)).json()
    assert listed["total_count"] == 0


async def test_conversations_that_cannot_be_made_are_refused_and_nothing_stored(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "conv")
    other = await new_caller(pool, "conv")
    ready = await _replica(pool, owner)
    training = await _replica(pool, owner, "started")
    failed = await _replica(pool, owner, "error")
    foreign_replica = await _replica(pool, other)
    pid = await _persona(client, owner, ready)
    bare = await _persona(client, owner, None)
    untrained = await _persona(client, owner, training)
    foreign_persona = await _persona(client, other, foreign_replica)

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"persona_id": "p000000000000"}, 404, "No persona p000000000000"),
        ({"persona_id": foreign_persona}, 404, f"No persona {foreign_persona}"),
        ({"persona_id": pid, "replica_id": "r000000000000"}, 404, "No replica r000000000000"),
        ({"persona_id": pid, "replica_id": foreign_replica}, 404, f"No replica {foreign_replica}"),
        ({"persona_id": pid, "replica_id": training}, 409, "is still training"),
        ({"persona_id": pid, "replica_id": failed}, 409, "failed to train"),
        ({"persona_id": untrained}, 409, f"{untrained}'s `default_replica_id`"),
        ({"persona_id": bare}, 422, "`replica_id` is required"),
        ({"persona_id": pid, "room_url": "x"}, 422, "['room_url']"),
        ({"replica_id": ready}, 422, "`persona_id` is required"),
        ({"persona_id": pid, "audio_only": "true"}, 422, "`audio_only`"),
        ({"persona_id": pid, "properties": {"max_call_duration": -5}}, 422, "max_call_duration"),
        ({"persona_id": pid, "properties": {"language": "multilingual"}}, 422, "'multilingual'"),
        ({"persona_id": pid, "properties": {"enable_closed_captions": True}}, 422, "captions"),
        ({"persona_id": pid, "properties": {"recording_s3_bucket_name": "b"}}, 422, "bucket"),
        ({"persona_id": pid, "callback_url": "http://127.0.0.1:9/hook"}, 422, "loopback"),
        ({"persona_id": pid, "callback_url": "ftp://example.com/x"}, 422, "callback_url"),
        (
            {"persona_id": pid, "conversational_context": "x" * 60_000},
            422,
            "at most 60000",
        ),
    ]
    for body, status, words in cases:
        response = await client.post("/v2/conversations", json=body, headers=owner.headers)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], (words, response.text)
    for raw in (b"{not json", b"[1, 2]"):
        response = await client.post(
            "/v2/conversations",
            content=raw,
            headers={**owner.headers, "content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
    assert await _count(pool, owner) == 0

    # test_mode: made, but ended at once (nobody joins).
    tried = await client.post(
        "/v2/conversations", json={"persona_id": pid, "test_mode": True}, headers=owner.headers
    )
    assert tried.status_code == 200, tried.text
    assert tried.json()["status"] == "ended"
    got = (
        await client.get(
            f"/v2/conversations/{tried.json()['conversation_id']}", headers=owner.headers
        )
    ).json()
    assert got["test_mode"] is True and got["shutdown_reason"] == "test_mode" and got["ended_at"]


async def test_a_full_server_refuses_a_new_conversation_until_a_seat_frees(
    settings: Settings, pool: Any
) -> None:
    one_seat = dataclasses.replace(settings, max_calls=1)
    async with AsyncTestClient(app=create_app(one_seat), timeout=60) as api:
        owner = await new_caller(pool, "conv")
        pid = await _persona(api, owner, await _replica(pool, owner))
        first = await api.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
        assert first.status_code == 200, first.text
        full = await api.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
        assert full.status_code == 503, full.text
        assert "DOPPEL_MAX_CALLS=1" in full.json()["detail"]
        assert full.headers["retry-after"] == "30"
        assert await _count(pool, owner) == 1  # nothing stored for the refused one
        # A test_mode conversation takes no seat (nobody joins it).
        tried = {"persona_id": pid, "test_mode": True}
        assert (await api.post("/v2/conversations", json=tried, headers=owner.headers)).is_success
        cid = first.json()["conversation_id"]
        assert (await api.post(f"/v2/conversations/{cid}/end", headers=owner.headers)).is_success
        again = await api.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
        assert again.status_code == 200, again.text


async def test_interactions_posted_by_a_server_are_refused_with_a_reason_without_a_call(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "conv")
    pid = await _persona(client, owner, await _replica(pool, owner))
    made = await client.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
    cid = made.json()["conversation_id"]
    path = f"/v2/conversations/{cid}/interactions"
    echo = {"event_type": "conversation.echo", "properties": {"text": "Hello"}}
    idle = await client.post(path, json=echo, headers=owner.headers)
    assert idle.status_code == 409 and "no call in progress" in idle.json()["detail"], idle.text
    other = await new_caller(pool, "conv")
    assert (await client.post(path, json=echo, headers=other.headers)).status_code == 404
    wrong = {**echo, "conversation_id": "c000000000000"}
    refused = await client.post(path, json=wrong, headers=owner.headers)
    assert refused.status_code == 422 and "not this conversation" in refused.json()["detail"]
    bad = await client.post(path, json={"properties": {}}, headers=owner.headers)
    assert 400 <= bad.status_code < 500 and "event_type" in bad.text, bad.text


async def test_the_call_link_opens_the_page_and_the_join_without_a_key_and_nothing_else(
    settings: Settings, pool: Any, tmp_path: Path
) -> None:
    """`conversation_url` serves the web app's call page; its token opens `/join` and `/offer`
    of that conversation only; a wrong or missing token opens nothing, and the page is served
    with a 404 (it says so itself and asks for no microphone); an ended call is a 409 to join.
    """
    web = tmp_path / "web"
    (web / "call").mkdir(parents=True)
    (web / "index.html").write_text("<html>app</html>")
    (web / "call" / "index.html").write_text("<html><body>the call page</body></html>")
    async with AsyncTestClient(app=create_app(dataclasses.replace(settings, web_dir=web))) as api:
        owner = await new_caller(pool, "conv")
        pid = await _persona(api, owner, await _replica(pool, owner))
        made = await api.post("/v2/conversations", json={"persona_id": pid}, headers=owner.headers)
        cid = made.json()["conversation_id"]
        link = urlsplit(made.json()["conversation_url"])
        token = parse_qs(link.query)["t"][0]
        page = await api.get(f"{link.path}?{link.query}")
        assert page.status_code == 200 and "the call page" in page.text
        assert "x-frame-options" not in page.headers  # an iframe may hold it
        assert page.headers["referrer-policy"] == "no-referrer"
        for query in ("?t=wrong", ""):
            refused = await api.get(f"{link.path}{query}")
            assert refused.status_code == 404 and "the call page" in refused.text

        info = await api.get(f"/v2/conversations/{cid}/join?t={token}")
        assert info.status_code == 200, info.text
        assert info.json() == {
            "conversation_id": cid,
            "conversation_name": made.json()["conversation_name"],
            "status": "active",
            "shutdown_reason": None,
            "audio_only": False,
            "replica_id": made.json()["replica_id"],
            "connected": False,
        }
        wrong = await api.get(f"/v2/conversations/{cid}/join?t=wrong")
        assert wrong.status_code == 404 and "opens with this link" in wrong.json()["detail"]
        missing = await api.get(f"/v2/conversations/{cid}/join")
        assert missing.status_code == 401 and "share link" in missing.json()["detail"]
        # The token is no key: the conversation's other routes stay closed to it.
        for path in (f"/v2/conversations/{cid}", f"/v2/conversations/{cid}/recording"):
            closed = await api.get(f"{path}?t={token}")
            assert closed.status_code in (401, 404), (path, closed.text)
        assert (await api.get(f"/v2/conversations?t={token}")).status_code == 401

        offer = {"sdp": "v=0", "type": "offer"}
        bad = await api.post(f"/v2/conversations/{cid}/offer?t=wrong", json=offer)
        assert bad.status_code == 404, bad.text
        await api.post(f"/v2/conversations/{cid}/end", headers=owner.headers)
        over = await api.post(f"/v2/conversations/{cid}/offer?t={token}", json=offer)
        assert over.status_code == 409 and "has ended" in over.json()["detail"], over.text
        info = await api.get(f"/v2/conversations/{cid}/join?t={token}")
        assert info.json()["status"] == "ended"
        assert info.json()["shutdown_reason"] == "end_conversation_endpoint_hit"

        # Not recorded: its recording is a 404 saying how to record one.
        plain = await api.get(f"/v2/conversations/{cid}/recording", headers=owner.headers)
        assert plain.status_code == 404 and "enable_recording" in plain.json()["detail"]
        body = (await api.get(f"/v2/conversations/{cid}", headers=owner.headers)).json()
        assert body["recording_url"] is None


async def test_without_a_web_build_the_call_page_says_how_to_build_it(
    settings: Settings, pool: Any, tmp_path: Path
) -> None:
    bare = dataclasses.replace(settings, web_dir=tmp_path / "none")
    async with AsyncTestClient(app=create_app(bare)) as api:
        page = await api.get("/conversations/c000000000000?t=x")
        assert page.status_code == 503 and "npm run build" in page.text
