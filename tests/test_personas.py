"""Personas (`/v2/personas`): created with an LLM layer whose key is never read back, listed
per tenant, edited by JSON Patch all or nothing, refused with a message for every bad field,
and deleted (the key forgotten). Real PostgreSQL through the API; no LLM is called here."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from doppel.domain import json_patch, personas, replicas
from doppel.errors import InvalidRequest
from tests.conftest import Caller, new_caller

KEY = "sk-test-0123456789abcdef"
#: A public address as an IP literal: checked without a DNS lookup (no internet here).
PUBLIC_LLM = "https://93.184.216.34/v1"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def persona_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "persona_name": "Coach",
        "system_prompt": "You are a patient running coach. Answer in two sentences.",
        "context": "The user trains for a first marathon.",
        "layers": {"llm": {"model": "qwen2.5", "base_url": PUBLIC_LLM, "api_key": KEY}},
    }
    body.update(changes)
    return body


async def _replica(pool: Any, caller: Caller) -> str:
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths, status)
           VALUES ($1, $2, 'fake', '/nonexistent', '{}', 'completed')""",
        rid,
        caller.tenant.id,
    )
    return rid


# --- pure logic ----------------------------------------------------------------------------------


def test_json_patch_applies_all_or_nothing() -> None:
    doc = {"context": "a", "layers": {"llm": {"tools": [1, 2]}}}
    out = json_patch.apply(
        doc,
        [
            {"op": "test", "path": "/context", "value": "a"},
            {"op": "replace", "path": "/context", "value": "b"},
            {"op": "add", "path": "/layers/llm/tools/-", "value": 3},
            {"op": "add", "path": "/layers/llm/tools/0", "value": 0},
            {"op": "remove", "path": "/layers/llm/tools/1"},
            {"op": "add", "path": "/layers/llm/model", "value": "m"},
        ],
        personas.EDITABLE,
    )
    assert out == {"context": "b", "layers": {"llm": {"tools": [0, 2, 3], "model": "m"}}}
    assert doc == {"context": "a", "layers": {"llm": {"tools": [1, 2]}}}  # untouched
    for ops, words in [
        ([{"op": "test", "path": "/context", "value": "z"}], "test failed at /context"),
        ([{"op": "replace", "path": "/persona_id", "value": "p1"}], "cannot be changed"),
        ([{"op": "remove", "path": "/layers/tts"}], "does not exist"),
        ([{"op": "add", "path": "/layers/llm/tools/9", "value": 1}], "out of range"),
        ([{"op": "replace", "path": "/context"}], "has no `value`"),
        ([{"op": "move", "from": "/a", "path": "/context"}], "`op` 'move' is not supported"),
        ([{"op": "replace", "path": "context", "value": 1}], "JSON Pointer"),
        ({"op": "replace"}, "a list of operations"),
        ([], "a list of operations"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            json_patch.apply(doc, ops, personas.EDITABLE)


def test_tools_are_openai_function_definitions() -> None:
    assert personas.check_tools([TOOL]) == [TOOL]
    bare = personas.check_tools([{"type": "function", "function": {"name": "hang_up"}}])
    assert bare[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    for tools, words in [
        ({"name": "x"}, "must be a list"),
        ([{"type": "retrieval"}], r"tools\[0\]` must be"),
        ([TOOL, TOOL], "used twice"),
        ([{"type": "function", "function": {"name": "two words"}}], "1-64 letters"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            "JSON Schema object",
        ),
        ([{"type": "function", "function": {"name": "f", "returns": 1}}], "unknown field"),
        ([TOOL] * (personas.MAX_TOOLS + 1), "at most"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            personas.check_tools(tools)


def test_a_key_is_shown_by_its_last_four_characters_only() -> None:
    assert personas.masked(KEY) == "...cdef"
    assert personas.masked("short") == "..."
    assert personas.masked(None) is None


# --- through the API -----------------------------------------------------------------------------


async def test_a_persona_is_created_listed_read_and_its_key_never_returned(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "persona")
    rid = await _replica(pool, owner)
    body = persona_body(default_replica_id=rid)
    body["layers"]["llm"]["tools"] = [TOOL]
    made = await client.post("/v2/personas", json=body, headers=owner.headers)
    assert made.status_code == 200, made.text
    got = made.json()
    pid = got["persona_id"]
    assert pid.startswith("p") and got["persona_name"] == "Coach"
    assert got["default_replica_id"] == rid and got["pipeline_mode"] == "full"
    assert got["layers"]["llm"] == {
        "model": "qwen2.5",
        "base_url": PUBLIC_LLM,
        "tools": [TOOL],
        "api_key": "...cdef",
    }
    read = await client.get(f"/v2/personas/{pid}", headers=owner.headers)
    listed = await client.get("/v2/personas?limit=5", headers=owner.headers)
    assert read.json() == got
    assert listed.json()["total_count"] == 1 and listed.json()["data"] == [got]
    for response in (made, read, listed):
        assert KEY not in response.text
    stored = await pool.fetchrow(
        "SELECT layers, llm_api_key FROM personas WHERE persona_id = $1", pid
    )
    assert stored["llm_api_key"] == KEY and KEY not in stored["layers"]

    # Another tenant sees nothing of it, and cannot point a persona at this tenant's replica.
    other = await new_caller(pool, "persona")
    assert (await client.get(f"/v2/personas/{pid}", headers=other.headers)).status_code == 404
    assert (await client.get("/v2/personas", headers=other.headers)).json()["total_count"] == 0
    foreign = await client.post(
        "/v2/personas", json=persona_body(default_replica_id=rid), headers=other.headers
    )
    assert foreign.status_code == 404 and rid in foreign.json()["detail"]
    assert (await client.get("/v2/personas")).status_code == 401

    # A persona needs only its prompt: no LLM layer means the platform's own model.
    plain = await client.post(
        "/v2/personas", json={"system_prompt": "Be brief."}, headers=owner.headers
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["layers"] == {} and plain.json()["persona_name"].startswith("persona p")


async def test_bad_personas_are_refused_with_what_to_change_and_nothing_stored(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "persona")
    cases: list[tuple[dict[str, Any], str]] = [
        (persona_body(system_prompt="   "), "`system_prompt` is empty"),
        (persona_body(system_prompt=None), "`system_prompt` is empty"),
        (persona_body(context=["a"]), "`context` must be text"),
        (persona_body(pipeline_mode="echo"), "'echo' is not one Doppel runs"),
        (persona_body(layers={"tts": {"tts_engine": "cartesia"}}), "layer(s) ['tts']"),
        (persona_body(layers={"llm": {"model": "m", "temperature": 2}}), "['temperature']"),
        (persona_body(layers={"llm": {"base_url": PUBLIC_LLM}}), "name the model"),
        (persona_body(layers={"llm": {"model": "m", "base_url": "ftp://x/v1"}}), "http or https"),
        (
            persona_body(layers={"llm": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}}),
            "loopback",
        ),
        (persona_body(layers={"llm": {"model": "m", "api_key": ""}}), "non-empty text"),
        (persona_body(layers={"llm": {"model": "m", "tools": [{"type": "x"}]}}), r"tools[0]"),
        (persona_body(system_prompt="x" * (personas.MAX_PROMPT_CHARS + 1)), "at most 60000"),
        (persona_body(persona_name="n" * 201), "at most 200"),
        (persona_body(default_replica_id="r000000000000"), "r000000000000"),
        (persona_body(voice="joe"), "Unknown persona field(s) ['voice']"),
        (persona_body(layers={"llm": {"timezone": "Mars/Olympus"}}), "'Mars/Olympus' is not"),
        (persona_body(layers={"stt": {"stt_engine": "tavus-advanced"}}), "['stt_engine']"),
        (
            persona_body(layers={"stt": {"participant_pause_sensitivity": "max"}}),
            "must be one of ['low', 'medium', 'high']",
        ),
    ]
    for body, words in cases:
        response = await client.post("/v2/personas", json=body, headers=owner.headers)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert words in response.json()["detail"], (words, response.text)
    not_json = await client.post(
        "/v2/personas",
        content=b"{not json",
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert (await client.get("/v2/personas", headers=owner.headers)).json()["total_count"] == 0


async def test_turn_taking_and_the_time_zone_are_kept_with_the_persona(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "persona")
    layers = {
        "llm": {"timezone": "Europe/Paris"},
        "stt": {
            "participant_pause_sensitivity": "high",
            "participant_interrupt_sensitivity": "low",
        },
    }
    made = await client.post(
        "/v2/personas", json=persona_body(layers=layers), headers=owner.headers
    )
    assert made.status_code == 200, made.text
    read = await client.get(f"/v2/personas/{made.json()['persona_id']}", headers=owner.headers)
    assert read.json()["layers"] == layers


async def test_a_persona_is_edited_by_json_patch_and_deleted(
    client: AsyncTestClient, pool: Any
) -> None:
    owner = await new_caller(pool, "persona")
    made = (await client.post("/v2/personas", json=persona_body(), headers=owner.headers)).json()
    pid, url = made["persona_id"], f"/v2/personas/{made['persona_id']}"

    edited = await client.patch(
        url,
        json=[
            {"op": "replace", "path": "/context", "value": "Now a half marathon."},
            {"op": "add", "path": "/layers/llm/tools", "value": [TOOL]},
        ],
        headers=owner.headers,
    )
    assert edited.status_code == 200, edited.text
    got = edited.json()
    assert got["context"] == "Now a half marathon." and got["layers"]["llm"]["tools"] == [TOOL]
    # The key stays through an edit that does not touch it, and is never returned.
    assert got["layers"]["llm"]["api_key"] == "...cdef" and KEY not in edited.text
    assert got["updated_at"] > made["updated_at"]

    # An edit that would leave a bad persona changes nothing.
    for ops, words in [
        ([{"op": "replace", "path": "/system_prompt", "value": ""}], "`system_prompt` is empty"),
        (
            [
                {"op": "replace", "path": "/context", "value": "lost"},
                {"op": "remove", "path": "/layers/llm/nothing"},
            ],
            "does not exist",
        ),
        ([{"op": "replace", "path": "/created_at", "value": "x"}], "cannot be changed"),
        (
            [{"op": "add", "path": "/layers/perception", "value": {"model": "raven"}}],
            "['perception']",
        ),
    ]:
        refused = await client.patch(url, json=ops, headers=owner.headers)
        assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    assert (await client.get(url, headers=owner.headers)).json() == got

    # Removing the key leaves the layer without one.
    no_key = await client.patch(
        url, json=[{"op": "remove", "path": "/layers/llm/api_key"}], headers=owner.headers
    )
    assert no_key.status_code == 200 and "api_key" not in no_key.json()["layers"]["llm"]
    other = await new_caller(pool, "persona")
    ops = [{"op": "replace", "path": "/context", "value": "mine"}]
    assert (await client.patch(url, json=ops, headers=other.headers)).status_code == 404

    rekey = [{"op": "add", "path": "/layers/llm/api_key", "value": KEY}]
    assert (await client.patch(url, json=rekey, headers=owner.headers)).status_code == 200
    gone = await client.delete(url, headers=owner.headers)
    assert gone.status_code == 200 and gone.json() == {"persona_id": pid, "status": "deleted"}
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    assert (await client.patch(url, json=ops, headers=owner.headers)).status_code == 404
    key = await pool.fetchval("SELECT llm_api_key FROM personas WHERE persona_id = $1", pid)
    assert key is None  # forgotten with the persona
