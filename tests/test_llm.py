"""The OpenAI-compatible chat client (doppel.live.llm) against a server speaking that protocol over
real HTTP (aiohttp): the hosted LLM API cannot exist here, so a small server stands in for it
on the wire, streaming server-sent events as OpenAI's chat completions do. Text arrives in
order, tool calls are assembled from fragments, refusals name what to change, leaving the loop
early closes the stream, and streamed text is cut into sentences for the voice. Last, the
platform's own model (llama.cpp, started with the session's services) answers for real."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from doppel.live import llm


@dataclasses.dataclass
class Stub:
    url: str = ""
    #: Each request's headers and JSON body.
    got: list[tuple[dict[str, str], dict[str, Any]]] = dataclasses.field(default_factory=list)
    #: What the next request is answered with: (status, SSE data payloads) or raw bytes.
    script: list[Any] = dataclasses.field(default_factory=list)
    delay_s: float = 0.0
    sent: int = 0
    cut: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    from aiohttp import web

    box = Stub()

    async def completions(request: web.Request) -> web.StreamResponse:
        box.got.append(({k.lower(): v for k, v in request.headers.items()}, await request.json()))
        status, events = box.script.pop(0)
        if status != 200:
            return web.json_response({"error": {"message": events}}, status=status)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                payload = event if isinstance(event, str) else json.dumps(event)
                await response.write(f"data: {payload}\n\n".encode())
                box.sent += 1
                if box.delay_s:
                    await asyncio.sleep(box.delay_s)
        except (ConnectionResetError, asyncio.CancelledError):
            box.cut.set()
            raise
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield box
    finally:
        await runner.cleanup()


def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def tool_chunk(index: int, **fields: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if "id" in fields:
        call["id"] = fields.pop("id")
    call["function"] = fields
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


async def test_text_streams_in_order_with_the_request_as_openai_takes_it(stub: Stub) -> None:
    stub.script.append(
        (200, [text_chunk("Hel"), text_chunk("lo, "), text_chunk("runner.", "stop"), "[DONE]"])
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    messages = llm.persona_messages(
        "You coach.", "A marathon.", [{"role": "user", "content": "Hi"}]
    )
    reply = llm.Reply()
    config = llm.LlmConfig(stub.url, "qwen2.5", api_key="sk-abc", temperature=0.2)
    async with llm.ChatClient(config) as chat:
        pieces = [t async for t in chat.stream(messages, tools, reply)]
    assert pieces == ["Hel", "lo, ", "runner."]
    assert reply.text == "Hello, runner." and reply.finish_reason == "stop"
    headers, body = stub.got[0]
    assert headers["authorization"] == "Bearer sk-abc"
    assert body["model"] == "qwen2.5" and body["stream"] is True and body["tools"] == tools
    assert body["temperature"] == 0.2 and "max_tokens" not in body
    assert body["messages"] == [
        {"role": "system", "content": "You coach.\n\nContext:\nA marathon."},
        {"role": "user", "content": "Hi"},
    ]


async def test_tool_calls_are_assembled_from_their_fragments(stub: Stub) -> None:
    stub.script.append(
        (
            200,
            [
                tool_chunk(0, id="call_a", name="get_weather", arguments=""),
                tool_chunk(1, id="call_b", name="hang_", arguments="{}"),
                tool_chunk(0, arguments='{"city": '),
                tool_chunk(1, name="up"),
                tool_chunk(0, arguments='"Paris"}'),
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                "[DONE]",
            ],
        )
    )
    async with llm.ChatClient(llm.LlmConfig(stub.url, "m")) as chat:
        reply = await chat.complete([{"role": "user", "content": "Weather?"}])
    assert reply.text == "" and reply.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in reply.tool_calls] == [
        ("call_a", "get_weather"),
        ("call_b", "hang_up"),
    ]
    assert reply.tool_calls[0].arguments_json() == {"city": "Paris"}
    assert reply.tool_calls[1].arguments_json() == {}
    assert "authorization" not in stub.got[0][0]  # no key, no header
    with pytest.raises(llm.LlmError, match="not JSON"):
        llm.ToolCall("c", "f", '{"city": ').arguments_json()


async def test_refusals_and_broken_streams_say_what_to_change(stub: Stub) -> None:
    stub.script += [
        (401, "Incorrect API key provided"),
        (404, "The model `gpt-9` does not exist"),
        (500, "overloaded"),
        (200, [text_chunk("ok"), "this is not json"]),
        (200, [{"error": {"message": "context length exceeded"}}]),
    ]
    for words in [
        "refused the API key (401: Incorrect API key provided). Check `layers.llm.api_key`",
        "does not exist). Check `layers.llm.model`",
        "answered 500: overloaded",
        "not a chat completion chunk",
        "stopped with an error: context length exceeded",
    ]:
        async with llm.ChatClient(llm.LlmConfig(stub.url, "gpt-9", api_key="k")) as chat:
            with pytest.raises(llm.LlmError) as err:
                await chat.complete([{"role": "user", "content": "Hi"}])
        assert words in err.value.message, err.value.message
        assert stub.url in err.value.message
    nobody = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    async with llm.ChatClient(llm.LlmConfig(nobody, "m", timeout_s=5)) as chat:
        with pytest.raises(llm.LlmError, match="could not be reached"):
            await chat.complete([{"role": "user", "content": "Hi"}])


async def test_leaving_the_loop_early_closes_the_stream(stub: Stub) -> None:
    """An interruption: the caller stops reading after two pieces; the server sees the
    connection go instead of writing the other 98."""
    stub.delay_s = 0.05
    stub.script.append((200, [text_chunk(f"word{i} ") for i in range(100)] + ["[DONE]"]))
    got: list[str] = []
    async with llm.ChatClient(llm.LlmConfig(stub.url, "m")) as chat:
        async with contextlib.aclosing(chat.stream([{"role": "user", "content": "Talk"}])) as s:
            async for piece in s:
                got.append(piece)
                if len(got) == 2:
                    break
        # The client is still open: closing the stream alone ended the response.
        await asyncio.wait_for(stub.cut.wait(), timeout=10)
    assert got == ["word0 ", "word1 "] and stub.sent < 100


async def pieces(*parts: str) -> AsyncIterator[str]:
    for p in parts:
        yield p


async def test_streamed_text_is_cut_into_sentences_for_the_voice() -> None:
    async def cut(*parts: str, min_chars: int = 12) -> list[str]:
        return [s async for s in llm.sentences(pieces(*parts), min_chars=min_chars)]

    text = "Great question! Pace yourself, e.g. run 3.5 km easy. Then rest.\nDrink water"
    # "e.g. run" and "3.5" end nothing; "Then rest." is under 12 characters, so it waits and
    # goes out with what follows it.
    want = ["Great question!", "Pace yourself, e.g. run 3.5 km easy.", "Then rest.\nDrink water"]
    assert await cut(text) == want
    # Wherever the stream's chunks fall, the sentences are the same.
    assert await cut(*[text[i : i + 3] for i in range(0, len(text), 3)]) == want
    assert await cut(*text) == want
    assert await cut("Yes. I can help with that.") == ["Yes. I can help with that."]
    assert await cut('He said "Go." Then he left the room.', min_chars=1) == [
        'He said "Go."',
        "Then he left the room.",
    ]
    assert await cut("", "  ") == []
    # A stray quote after the last sentence (the local model writes them) is no sentence.
    assert await cut('It is like asking "What can I do for my country? "') == [
        'It is like asking "What can I do for my country?'
    ]


async def test_a_tool_call_written_as_text_is_read_as_one_and_other_text_is_not(
    stub: Stub,
) -> None:
    """llama.cpp's generic chat formats leave a model's tool call in the text (Qwen writes
    `{"name": ..., "arguments": ...}`, Hermes-style models wrap it in <tool_call> tags)."""
    tools = [{"type": "function", "function": {"name": "get_current_time", "parameters": {}}}]
    call = '{"name": "get_current_time", "arguments": {}}\n{"name": "get current time"}'
    tagged = '<tool_call>\n{"name": "get_current_time", "arguments": "{}"}\n</tool_call>'
    for text in (call, tagged):
        stub.script.append((200, [text_chunk(text[:9]), text_chunk(text[9:]), "[DONE]"]))
    stub.script.append((200, [text_chunk("{not a call} at all."), "[DONE]"]))
    stub.script.append((200, [text_chunk('{"name": "get_weather"}'), "[DONE]"]))
    async with llm.ChatClient(llm.LlmConfig(stub.url, "m")) as chat:
        for expected in (2, 1):
            reply = llm.Reply()
            assert [t async for t in chat.stream([], tools, reply)] == []  # nothing to speak
            assert reply.calls_in_text and reply.text == ""
            assert [c.name for c in reply.tool_calls] == ["get_current_time"] * expected
            assert reply.tool_calls[0].arguments_json() == {}
        reply = llm.Reply()
        assert "".join([t async for t in chat.stream([], tools, reply)]) == "{not a call} at all."
        assert not reply.tool_calls
        # A tool the model was not offered is text, not a call.
        reply = llm.Reply()
        assert [t async for t in chat.stream([], tools, reply)] == ['{"name": "get_weather"}']
        assert not reply.tool_calls
    assert llm.text_tool_calls('{"name": "x"} and more', {"x"}) == []


def test_the_current_time_is_said_in_the_personas_time_zone() -> None:
    import datetime as dt

    from doppel.live import tools

    now = dt.datetime(2026, 12, 5, 14, 7, tzinfo=dt.UTC)
    assert tools.current_time(None, now) == "It is 2:07 PM on Saturday, December 5, 2026 (UTC)."
    paris = tools.current_time("Europe/Paris", now)
    assert paris == "It is 3:07 PM on Saturday, December 5, 2026 (Europe/Paris)."
    names = [t["function"]["name"] for t in tools.offered([])]
    assert names == ["get_current_time"]
    own = {"type": "function", "function": {"name": "get_current_time", "parameters": {}}}
    assert tools.offered([own]) == [own]  # the persona's own definition is kept


async def test_the_first_piece_may_end_at_a_clause_to_speak_sooner() -> None:
    text = "The museum opens at nine in the morning, every day, of the week. Tickets, please."
    chunks = [text[i : i + 4] for i in range(0, len(text), 4)]  # as an LLM streams it
    got = [s async for s in llm.sentences(pieces(*chunks), first_clause=24)]
    assert got == [
        "The museum opens at nine in the morning,",
        "every day, of the week.",
        "Tickets, please.",
    ], got
    # A first sentence already whole goes whole.
    whole = [s async for s in llm.sentences(pieces(text), first_clause=24)]
    assert whole == [
        "The museum opens at nine in the morning, every day, of the week.",
        "Tickets, please.",
    ]
    # A clause shorter than asked waits for the sentence's end; off by default.
    short = "Yes, of course. The garden is open."
    assert [s async for s in llm.sentences(pieces(short), first_clause=24)] == [
        "Yes, of course.",
        "The garden is open.",
    ]
    assert [s async for s in llm.sentences(pieces(text))][0].endswith("of the week.")


def test_a_persona_talks_through_its_own_endpoint_or_the_platforms_model() -> None:
    from doppel.settings import Settings

    base = Settings("db", "redis", "grpc", "http", Path("/d"), Path("/m"))
    platform = dataclasses.replace(base, llm_url="http://127.0.0.1:1/v1", llm_model="local")
    own = {"llm": {"model": "gpt-x", "base_url": "https://api.example.com/v1"}}
    assert llm.config_for(own, "sk-1", platform) == llm.LlmConfig(
        "https://api.example.com/v1", "gpt-x", "sk-1"
    )
    assert llm.config_for({}, None, platform) == llm.LlmConfig("http://127.0.0.1:1/v1", "local")
    named = llm.config_for({"llm": {"model": "tuned"}}, None, platform)
    assert (named.base_url, named.model, named.api_key) == ("http://127.0.0.1:1/v1", "tuned", None)
    with pytest.raises(llm.LlmError, match="DOPPEL_LLM_URL"):
        llm.config_for({}, None, base)


async def test_the_platforms_own_model_streams_a_reply(settings: Any) -> None:
    """The local model `make up` serves (llama.cpp, Qwen2.5-Coder 0.5B): a persona without an
    LLM layer gets a streamed, finished reply that reads as an answer to the question."""
    config = dataclasses.replace(llm.config_for({}, None, settings), temperature=0.0, max_tokens=60)
    messages = llm.persona_messages(
        "You are a friendly running coach. Answer in one or two short sentences.",
        "The user is training for a first marathon.",
        [{"role": "user", "content": "What should I eat the evening before a long run?"}],
    )
    reply = llm.Reply()
    async with llm.ChatClient(config) as chat:
        pieces = [p async for p in chat.stream(messages, reply=reply)]
    print("platform model:", repr(reply.text))
    assert len(pieces) > 3, "the reply came in one block, not streamed"
    assert reply.finish_reason in ("stop", "length") and "".join(pieces) == reply.text
    assert len(reply.text.split()) >= 5
    food = ("carb", "pasta", "rice", "bread", "potato", "banana", "oat", "meal", "protein", "food")
    assert any(w in reply.text.lower() for w in food), reply.text
