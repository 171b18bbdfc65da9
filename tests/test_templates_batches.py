"""Templates and batches: variables found in a script, previews, one video per template call,
and batches of rows (JSON and CSV) where a row missing a variable fails alone and a repeated
submission makes nothing new. Nothing is trained or rendered: the replica is a `completed`
row made directly, and the videos stay `queued` (their render jobs are taken off the queue
after each test, so a later worker in the session never sees them)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from litestar.testing import AsyncTestClient

from doppel.domain import batch_rows, batches, replicas, templates
from doppel.errors import InvalidRequest, ServiceUnavailable
from doppel.platform import queue
from doppel.settings import Settings
from tests.conftest import Caller, new_caller

PREFIX = "tpl"
SCRIPT = "Hi {{ first_name }}, welcome to {{company}}. See you soon, {{first_name}}!"
ROWS: list[dict[str, Any]] = [
    {"first_name": "Ann", "company": "Acme"},
    {"first_name": "Bo", "company": "Globex"},
    {"company": "Initech"},  # row 3: no first_name
    {"first_name": "Dee", "company": "Umbrella"},
    {"first_name": "Eve", "company": "Hooli"},
]


# --- pure logic ----------------------------------------------------------------------------------


def test_variables_are_found_once_in_order_with_loose_spaces() -> None:
    assert templates.variables_of(SCRIPT) == ["first_name", "company"]
    assert templates.variables_of("{{a}}{{  _b2\t}} {{ 9x }} {{ a-b }} { {c} }") == ["a", "_b2"]
    assert templates.variables_of("No variables here.") == []


def test_fill_names_every_missing_variable_and_inserts_values_once() -> None:
    filled = templates.fill(SCRIPT, {"first_name": " Ann ", "company": "{{first_name}}"})
    assert filled == "Hi Ann, welcome to {{first_name}}. See you soon, Ann!"
    assert templates.fill("Price: {{n}} for {{m}}.", {"n": 3, "m": 2.5}) == "Price: 3 for 2.5."
    with pytest.raises(InvalidRequest, match="`a` is neither text nor a number"):
        templates.fill("{{a}}", {"a": ["x"], "unused": {"y": 1}})
    with pytest.raises(templates.MissingVariables) as missing:
        templates.fill("{{a}} {{b}} {{c}}", {"b": "x", "c": "   "})
    assert missing.value.names == ["a", "c"]
    assert "`a`, `c`" in missing.value.message


def test_a_malformed_placeholder_is_refused_with_its_place() -> None:
    with pytest.raises(InvalidRequest, match="first name"):
        templates.check_template_script("Hello {{first name}}, how are you?")
    with pytest.raises(InvalidRequest, match="`}}`"):
        templates.check_template_script("Hello {first_name}}")
    assert templates.check_template_script("  Hello {{x}}  ") == "Hello {{x}}"


def test_csv_rows_tolerate_a_bom_and_name_the_bad_line() -> None:
    data = '\ufefffirst_name,company,row_key\r\nAnn,"Acme, Inc.",a\n\nBo,Globex,b\n'.encode()
    assert batch_rows.rows_from_csv(data) == [
        {"first_name": "Ann", "company": "Acme, Inc.", "row_key": "a"},
        {"first_name": "Bo", "company": "Globex", "row_key": "b"},
    ]
    for bad, words in [
        (b"a,b\n1,2\n3,4,5\n", "line 3 has 3 fields"),
        (b'a,b\n1,"2\n', "line 2"),
        (b"a,b\n\xff,1\n", "not UTF-8"),
        (b"", "empty"),
        (b"a,a\n1,2\n", "twice"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            batch_rows.rows_from_csv(bad)


# --- helpers -------------------------------------------------------------------------------------


async def _replica(pool: Any, caller: Caller, status: str = "completed") -> str:
    """A replica row in `status` (no model: nothing here renders)."""
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths, status)
           VALUES ($1, $2, 'fake', '/nonexistent', '{}', $3)""",
        rid,
        caller.tenant.id,
        status,
    )
    return rid


async def _template(
    client: AsyncTestClient, caller: Caller, replica_id: str, script: str = SCRIPT
) -> dict[str, Any]:
    response = await client.post(
        "/v2/templates",
        json={"name": "Welcome", "replica_id": replica_id, "script": script},
        headers=caller.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _video_count(pool: Any, caller: Caller) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM videos WHERE tenant_id = $1", caller.tenant.id)
    )


@pytest.fixture
async def owner(pool: Any, settings: Settings) -> AsyncIterator[Caller]:
    """A tenant; after the test, its render jobs are taken off the session's queue."""
    caller = await new_caller(pool, PREFIX)
    yield caller
    ids = await pool.fetch("SELECT video_id FROM videos WHERE tenant_id = $1", caller.tenant.id)
    redis = await queue.connect(settings.redis_url)
    try:
        for r in ids:
            key = queue.job_id(queue.RENDER_VIDEO, r["video_id"])
            await redis.zrem(queue.QUEUE_NAME, key)
            await redis.delete(f"arq:job:{key}")
    finally:
        await redis.aclose(close_connection_pool=True)


# --- templates -----------------------------------------------------------------------------------


async def test_a_template_lists_its_variables_and_previews(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    rid = await _replica(pool, owner, status="started")  # a template may precede training's end
    made = await _template(client, owner, rid)
    tid = made["template_id"]
    assert tid.startswith("t") and made["variables"] == ["first_name", "company"]
    got = await client.get(f"/v2/templates/{tid}", headers=owner.headers)
    assert got.status_code == 200 and got.json()["script"] == SCRIPT
    listed = (await client.get("/v2/templates?limit=5", headers=owner.headers)).json()
    assert listed["total_count"] == 1 and listed["data"][0]["template_id"] == tid

    preview = await client.post(
        f"/v2/templates/{tid}/preview",
        json={"variables": {"first_name": "Ann", "company": "Acme"}},
        headers=owner.headers,
    )
    assert preview.status_code == 200
    assert preview.json() == {"script": "Hi Ann, welcome to Acme. See you soon, Ann!"}
    missing = await client.post(
        f"/v2/templates/{tid}/preview", json={"variables": {}}, headers=owner.headers
    )
    assert missing.status_code == 422
    assert "`first_name`, `company`" in missing.json()["detail"]
    wrong = await client.post(
        f"/v2/templates/{tid}/preview",
        json={"variables": {"first_name": True, "company": "Acme"}},
        headers=owner.headers,
    )
    assert wrong.status_code == 422 and "`first_name`" in wrong.json()["detail"]

    # Not completed yet: a video of it is a 409, and nothing is recorded.
    early = await client.post(
        f"/v2/templates/{tid}/videos",
        json={"variables": {"first_name": "Ann", "company": "Acme"}},
        headers=owner.headers,
    )
    assert early.status_code == 409 and "still training" in early.json()["detail"]
    assert await _video_count(pool, owner) == 0

    gone = await client.delete(f"/v2/templates/{tid}", headers=owner.headers)
    assert gone.status_code == 200
    assert (await client.get(f"/v2/templates/{tid}", headers=owner.headers)).status_code == 404


async def test_a_template_video_is_queued_with_the_filled_script(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    response = await client.post(
        f"/v2/templates/{tid}/videos",
        json={"variables": {"first_name": "Ann", "company": "Acme"}, "video_name": "For Ann"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "queued" and body["video_id"].startswith("v")
    row = await pool.fetchrow("SELECT * FROM videos WHERE video_id = $1", body["video_id"])
    assert row["script"] == "Hi Ann, welcome to Acme. See you soon, Ann!"
    assert row["video_name"] == "For Ann" and row["status"] == "queued"
    no_values = await client.post(
        f"/v2/templates/{tid}/videos", json={"variables": {"company": "X"}}, headers=owner.headers
    )
    assert no_values.status_code == 422 and "`first_name`" in no_values.json()["detail"]
    assert await _video_count(pool, owner) == 1


async def test_template_requests_that_cannot_be_made(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    rid = await _replica(pool, owner)

    async def post(doc: dict[str, Any]) -> Any:
        return await client.post("/v2/templates", json=doc, headers=owner.headers)

    assert (await post({"script": "Hi {{x}}"})).status_code == 422  # no replica_id
    unknown = await post({"replica_id": "r000000000000", "script": "Hi {{x}}"})
    assert unknown.status_code == 404 and "r000000000000" in unknown.json()["detail"]
    assert (await post({"replica_id": rid, "script": "  "})).status_code == 422
    bad = await post({"replica_id": rid, "script": "Hi {{first name}}"})
    assert bad.status_code == 422 and "{{name}}" in bad.json()["detail"]
    other = await new_caller(pool, PREFIX)
    theirs = await client.post(
        "/v2/templates", json={"replica_id": rid, "script": "Hi {{x}}"}, headers=other.headers
    )
    assert theirs.status_code == 404
    assert await pool.fetchval("SELECT count(*) FROM templates WHERE replica_id = $1", rid) == 0


# --- batches -------------------------------------------------------------------------------------


async def test_a_batch_makes_a_video_per_good_row_and_a_repeat_makes_nothing(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    response = await client.post(
        "/v2/batches", json={"template_id": tid, "rows": ROWS}, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    made = response.json()
    bid = made["batch_id"]
    assert bid.startswith("b") and made["counts"]["queued"] == 4 and made["counts"]["error"] == 1
    assert made["status"] == "running" and len(made["rows"]) == 5
    assert await _video_count(pool, owner) == 4

    body = (await client.get(f"/v2/batches/{bid}", headers=owner.headers)).json()
    assert body["template_id"] == tid and body["row_count"] == 5
    assert body["counts"] == {
        "pending": 0, "queued": 4, "generating": 0, "ready": 0, "error": 1, "deleted": 0,
    }  # fmt: skip
    rows = body["rows"]
    assert [r["row_index"] for r in rows] == [1, 2, 3, 4, 5]
    failed = rows[2]
    assert failed["status"] == "error" and failed["video_id"] is None
    assert failed["error_message"] == "Row 3: missing variable `first_name`."
    good = [r for r in rows if r["row_index"] != 3]
    assert all(r["status"] == "queued" and r["video_id"] for r in good)
    assert all(r["download_url"] is None for r in rows)
    script = await pool.fetchval(
        "SELECT script FROM videos WHERE video_id = $1", rows[1]["video_id"]
    )
    assert script == "Hi Bo, welcome to Globex. See you soon, Bo!"
    assert rows[0]["variables"] == ROWS[0]

    # The same submission again: the same batch, no new video, even with rows sent nested.
    nested = [{"variables": r} for r in ROWS]
    again = await client.post(
        "/v2/batches", json={"template_id": tid, "rows": nested}, headers=owner.headers
    )
    assert again.status_code == 200 and again.json()["batch_id"] == bid
    assert await _video_count(pool, owner) == 4
    assert await pool.fetchval("SELECT count(*) FROM batches WHERE template_id = $1", tid) == 1

    # Row 3 corrected: a new batch, whose other rows reuse the videos already queued.
    fixed = [*ROWS[:2], {"first_name": "Cy", "company": "Initech"}, *ROWS[3:]]
    third = await client.post(
        "/v2/batches", json={"template_id": tid, "rows": fixed}, headers=owner.headers
    )
    assert third.status_code == 200 and third.json()["batch_id"] != bid
    assert third.json()["counts"]["queued"] == 5
    assert await _video_count(pool, owner) == 5
    new_rows = await client.get(f"/v2/batches/{third.json()['batch_id']}", headers=owner.headers)
    assert new_rows.json()["rows"][0]["video_id"] == rows[0]["video_id"]

    listed = (await client.get("/v2/batches", headers=owner.headers)).json()
    assert listed["total_count"] == 2 and listed["data"][1]["batch_id"] == bid
    assert listed["data"][1]["counts"]["error"] == 1 and listed["data"][1]["rows"] is None


async def test_concurrent_identical_batches_make_one_batch(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    doc = {"template_id": tid, "rows": ROWS}
    answers = await asyncio.gather(
        *(client.post("/v2/batches", json=doc, headers=owner.headers) for _ in range(3))
    )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["batch_id"] for a in answers}) == 1
    assert await _video_count(pool, owner) == 4


async def test_a_queue_outage_leaves_rows_pending_and_a_repeat_makes_them(
    client: AsyncTestClient, pool: Any, owner: Caller, settings: Settings
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    template = await templates.get(pool, owner.tenant.id, tid)
    # A queue nobody listens on (port 1): every enqueue fails to connect.
    dead = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        with pytest.raises(ServiceUnavailable, match="4 of its rows") as outage:
            await batches.create(pool, dead, owner.tenant.id, tid, ROWS)
    finally:
        await dead.aclose()
    assert await _video_count(pool, owner) == 0  # each failed video row was undone
    bid = await pool.fetchval("SELECT batch_id FROM batches WHERE template_id = $1", tid)
    assert bid in outage.value.message
    view = await batches.get(pool, owner.tenant.id, bid)
    assert view.counts["pending"] == 4 and view.counts["error"] == 1
    assert view.status == "running"

    live = await queue.connect(settings.redis_url)
    try:
        again = await batches.create(pool, live, owner.tenant.id, template.template_id, ROWS)
    finally:
        await live.aclose(close_connection_pool=True)
    assert again == bid
    view = await batches.get(pool, owner.tenant.id, bid)
    assert view.counts["pending"] == 0 and view.counts["queued"] == 4
    assert await _video_count(pool, owner) == 4


async def test_client_row_keys_and_a_csv_upload(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    data = (
        "\ufefffirst_name,company,row_key\r\n"
        'Ann,"Acme, Inc.",crm-1\r\n'
        "Bo,,crm-2\r\n"
        "Cy,Initech,crm-3\r\n"
    ).encode()
    response = await client.post(
        "/v2/batches",
        files={"rows_csv": ("people.csv", data, "text/csv")},
        data={"template_id": tid, "batch_name": "November"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    bid = response.json()["batch_id"]
    assert response.json()["counts"]["queued"] == 2 and response.json()["counts"]["error"] == 1
    body = (await client.get(f"/v2/batches/{bid}", headers=owner.headers)).json()
    assert body["batch_name"] == "November"
    assert [r["row_key"] for r in body["rows"]] == ["crm-1", "crm-2", "crm-3"]
    assert body["rows"][1]["error_message"] == "Row 2: missing variable `company`."
    first = body["rows"][0]["video_id"]
    assert await pool.fetchval("SELECT script FROM videos WHERE video_id = $1", first) == (
        "Hi Ann, welcome to Acme, Inc.. See you soon, Ann!"
    )
    name = await pool.fetchval("SELECT video_name FROM videos WHERE video_id = $1", first)
    assert name == "November · row 1"

    # The same upload again is the same batch.
    again = await client.post(
        "/v2/batches",
        files={"rows_csv": ("people.csv", data, "text/csv")},
        data={"template_id": tid},
        headers=owner.headers,
    )
    assert again.json()["batch_id"] == bid and await _video_count(pool, owner) == 2

    # A key already used for a different script is that row's error; a reused key with the
    # same values reuses its video.
    rows = [
        {"first_name": "Ann", "company": "Acme, Inc.", "row_key": "crm-1"},
        {"first_name": "Zed", "company": "Other", "row_key": "crm-3"},
    ]
    mixed = await client.post(
        "/v2/batches", json={"template_id": tid, "rows": rows}, headers=owner.headers
    )
    assert mixed.status_code == 200, mixed.text
    got = await client.get(f"/v2/batches/{mixed.json()['batch_id']}", headers=owner.headers)
    one, three = got.json()["rows"]
    assert one["video_id"] == first and one["status"] == "queued"
    assert three["status"] == "error" and "crm-3" in three["error_message"]
    assert await _video_count(pool, owner) == 2


async def test_results_csv_has_a_row_per_row(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    made = await client.post(
        "/v2/batches", json={"template_id": tid, "rows": ROWS}, headers=owner.headers
    )
    bid = made.json()["batch_id"]
    # One video finished (as the worker would leave it): its row gets a download link.
    first = await pool.fetchval(
        "SELECT video_id FROM batch_rows WHERE batch_id = $1 AND row_index = 1", bid
    )
    await pool.execute("UPDATE videos SET status = 'ready' WHERE video_id = $1", first)
    response = await client.get(f"/v2/batches/{bid}/results.csv", headers=owner.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f'filename="{bid}.csv"' in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == [
        "row_index", "row_key", "first_name", "company", "status", "video_id", "download_url",
        "error_message",
    ]  # fmt: skip
    assert [r["row_index"] for r in table] == ["1", "2", "3", "4", "5"]
    assert [r["status"] for r in table] == ["ready", "queued", "error", "queued", "queued"]
    assert table[0]["download_url"].endswith(f"/v2/videos/{first}/download")
    assert table[0]["first_name"] == "Ann" and table[1]["download_url"] == ""
    assert table[2]["error_message"] == "Row 3: missing variable `first_name`."
    assert table[2]["video_id"] == "" and table[2]["first_name"] == ""
    summary = (await client.get(f"/v2/batches/{bid}", headers=owner.headers)).json()
    assert summary["counts"]["ready"] == 1 and summary["status"] == "running"


async def test_batch_requests_that_cannot_be_made(
    client: AsyncTestClient, pool: Any, owner: Caller
) -> None:
    tid = (await _template(client, owner, await _replica(pool, owner)))["template_id"]
    training = await _template(client, owner, await _replica(pool, owner, "started"))
    failed = await _template(client, owner, await _replica(pool, owner, "error"))

    async def post(doc: Any, caller: Caller = owner) -> Any:
        return await client.post("/v2/batches", json=doc, headers=caller.headers)

    unknown = await post({"template_id": "t000000000000", "rows": ROWS})
    assert unknown.status_code == 404 and "t000000000000" in unknown.json()["detail"]
    other = await new_caller(pool, PREFIX)
    assert (await post({"template_id": tid, "rows": ROWS}, other)).status_code == 404
    assert (await client.get(f"/v2/templates/{tid}", headers=other.headers)).status_code == 404
    busy = await post({"template_id": training["template_id"], "rows": ROWS})
    assert busy.status_code == 409 and "still training" in busy.json()["detail"]
    broken = await post({"template_id": failed["template_id"], "rows": ROWS})
    assert broken.status_code == 409 and "failed to train" in broken.json()["detail"]
    empty = await post({"template_id": tid, "rows": []})
    assert empty.status_code == 422 and "at least one row" in empty.json()["detail"]
    no_template = await post({"rows": ROWS})
    assert no_template.status_code == 422 and "template_id" in no_template.json()["detail"]
    too_many = await post({"template_id": tid, "rows": [{"first_name": "A"}] * 1001})
    assert too_many.status_code == 422 and "at most 1000" in too_many.json()["detail"]
    twice = await post({"template_id": tid, "rows": [ROWS[0], ROWS[1], ROWS[0]]})
    assert twice.status_code == 422 and "Rows 1 and 3" in twice.json()["detail"]
    not_json = await client.post(
        "/v2/batches",
        content=b"{not json",
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert not_json.status_code == 422
    malformed = await client.post(
        "/v2/batches",
        files={"rows_csv": ("x.csv", b"first_name,company\nAnn,Acme\nBo,Globex,extra\n")},
        data={"template_id": tid},
        headers=owner.headers,
    )
    assert malformed.status_code == 422 and "line 3" in malformed.json()["detail"]
    header_only = await client.post(
        "/v2/batches",
        files={"rows_csv": ("x.csv", b"first_name,company\n")},
        data={"template_id": tid},
        headers=owner.headers,
    )
    assert header_only.status_code == 422 and "at least one row" in header_only.json()["detail"]
    no_file = await client.post(
        "/v2/batches", data={"template_id": tid}, files={}, headers=owner.headers
    )
    assert no_file.status_code == 422 and "rows_csv" in no_file.json()["detail"]
    assert await _video_count(pool, owner) == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM batches WHERE tenant_id = $1", owner.tenant.id
    ) == 0  # fmt: skip

    # A script that grows past the limit once filled fails that row alone.
    short = await _template(client, owner, await _replica(pool, owner), "Dear {{name}}.")
    rows = [{"name": "Ann"}, {"name": "x" * 10_000}]
    long = await post({"template_id": short["template_id"], "rows": rows})
    assert long.status_code == 200, long.text
    bid = long.json()["batch_id"]
    body = (await client.get(f"/v2/batches/{bid}", headers=owner.headers)).json()
    assert body["rows"][0]["status"] == "queued"
    assert body["rows"][1]["status"] == "error"
    assert body["rows"][1]["error_message"].startswith("Row 2: The script has 10006 characters")
    assert (await client.get("/v2/batches/b000000000000", headers=owner.headers)).status_code == 404
    assert (
        await client.get(f"/v2/batches/{bid}/results.csv", headers=other.headers)
    ).status_code == 404
