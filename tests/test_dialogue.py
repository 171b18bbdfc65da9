"""One conversation turn end to end on the session's real services (doppel.live.dialogue): JFK's
recording heard by Triton's `stt`, the persona's reply written by the platform's own LLM
(llama.cpp) and spoken sentence by sentence in a cloned voice by Triton's `voice`, and an
interruption that keeps only what was said."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from doppel.audio.media import Audio, decode_audio
from doppel.live import dialogue, llm
from doppel.settings import Settings
from doppel.triton import TritonClient
from tests.conftest import shared_file
from tests.test_voice_serving import _train

pytestmark = pytest.mark.data
PERSONA = "You are a history teacher. Answer in two or three short sentences."


@pytest.fixture(scope="module")
def voice(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(settings.models_dir, tmp_path_factory.mktemp("voice") / "lj", seed=0)


@pytest.fixture
async def talk(settings: Settings, voice: Path) -> AsyncIterator[dialogue.Dialogue]:
    triton = TritonClient(settings.triton_grpc_url)
    config = dataclasses.replace(llm.config_for({}, None, settings), temperature=0.0, max_tokens=80)
    chat = llm.ChatClient(config)
    try:
        yield dialogue.Dialogue(triton, chat, voice, system_prompt=PERSONA)
    finally:
        await chat.close()
        await triton.close()


async def test_a_turn_is_heard_answered_and_spoken_sentence_by_sentence(
    talk: dialogue.Dialogue,
) -> None:
    jfk = await decode_audio(shared_file("speech", "jfk.flac"))
    heard = await talk.hear(jfk)
    assert "country" in heard.lower(), heard
    spoken = [s async for s in talk.reply()]
    print([s.text for s in spoken])
    assert spoken, "no reply"
    for s in spoken:
        assert s.audio.rate == 16000 and len(s.audio.samples) > 0.3 * 16000
        assert np.abs(s.audio.samples).max() > 0.01  # not silence
        # The talking head's timings: every sentence's words, inside its audio.
        words = s.timings["words"]
        assert words and words[-1]["end"] <= len(s.audio.samples) / 16000 + 0.05
    note, *said = talk.history  # the time, told before the person's words
    assert note["role"] == "system" and note["content"].startswith("Current time: It is ")
    assert said == [
        {"role": "user", "content": heard},
        {"role": "assistant", "content": " ".join(s.text for s in spoken)},
    ]


async def test_an_interrupted_reply_keeps_only_what_was_said(talk: dialogue.Dialogue) -> None:
    talk.history.append(
        {"role": "user", "content": "Tell me about the Roman Empire, at length and in detail."}
    )
    got = []
    async with contextlib.aclosing(talk.reply()) as reply:
        async for s in reply:
            got.append(s)
            break  # the person started speaking
    assert len(got) == 1
    assert talk.history[-1] == {
        "role": "assistant",
        "content": got[0].text + dialogue.INTERRUPTED,
    }


async def test_silence_is_not_a_turn(talk: dialogue.Dialogue) -> None:
    quiet = Audio(np.zeros(16000 * 2, np.float32), 16000)
    assert await talk.hear(quiet) == "" and talk.history == []
