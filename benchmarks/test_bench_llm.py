"""The platform's own chat model (llama.cpp's server with Qwen2.5-Coder-0.5B, as `make up` runs
it) through doppel.live.llm: seconds to the first streamed text and to the first whole sentence
(what
a live call waits for before the voice can start speaking), and streamed chunks a second
(llama.cpp sends one token a chunk)."""

import asyncio
import time

import pytest

from doppel.live import llm
from doppel.platform.stack import LocalPlatform

MESSAGES = llm.persona_messages(
    "You are a friendly running coach. Answer in two or three sentences.",
    "The user is training for a first marathon.",
    [{"role": "user", "content": "How should I pace the first half of the race?"}],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    local = LocalPlatform(tmp_path_factory.mktemp("llm-run"))
    try:
        endpoints = local.start_llm(fixed_ports=False)
        yield endpoints["llm"], endpoints["llm_model"]
    finally:
        local.down()


async def one_turn(url: str, model: str) -> dict[str, float]:
    start = time.perf_counter()
    marks: dict[str, float] = {}
    chunks = 0
    config = llm.LlmConfig(url, model, temperature=0.0, max_tokens=96)
    async with llm.ChatClient(config) as chat:

        async def texts():
            nonlocal chunks
            async for text in chat.stream(MESSAGES):
                marks.setdefault("first_text_s", time.perf_counter() - start)
                chunks += 1
                yield text

        async for _ in llm.sentences(texts()):
            marks.setdefault("first_sentence_s", time.perf_counter() - start)
    total = time.perf_counter() - start
    return {**marks, "chunks": chunks, "chunks_per_s": chunks / (total - marks["first_text_s"])}


def test_llm_reply(benchmark, server):
    url, model = server
    result = benchmark.pedantic(
        lambda: asyncio.run(one_turn(url, model)), rounds=3, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info.update({k: round(v, 3) for k, v in result.items()})
    assert result["chunks"] > 5 and result["first_sentence_s"] >= result["first_text_s"]
