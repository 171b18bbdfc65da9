"""One turn of a live conversation, once the person has finished speaking (doppel.live.turns).

Their words go through speech-to-text (Triton's `stt`); the persona's reply comes from its LLM
(doppel.live.llm), streamed; each sentence is spoken in the replica's cloned voice (Triton's
`voice`) as soon as the LLM has finished writing it, so the caller can play (and lip-sync) the
first sentence while the rest is still being written.

An interruption (the person starts speaking again: `TurnEvent("speech_started")`) is the caller
closing the reply generator: the LLM's stream is closed at once, so the model stops writing, and
the history keeps only what was said, marked as cut off, so the next reply knows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio import vad
from doppel.audio.media import Audio
from doppel.live import llm
from doppel.triton import TritonClient

#: Appended to a reply the person cut off, in the history the LLM reads next.
INTERRUPTED = " [interrupted by the user]"


@dataclasses.dataclass(frozen=True)
class Spoken:
    """One sentence of the reply: its text, its audio in the replica's voice, and the word and
    phoneme timings the talking head needs.
    """

    text: str
    audio: Audio
    timings: dict[str, Any]


#: Markdown an LLM writes that must not be read aloud: emphasis, headings, code fences and
#: backticks, list bullets at the start of a line.
_MARKDOWN = re.compile(r"[*_`#]+|^\s*(?:[-+]|\d+[.)])\s+", re.MULTILINE)


def speakable(text: str) -> str:
    """`text` as the voice should say it: without markdown, spaces collapsed; "" when no word
    is left.
    """
    clean = " ".join(_MARKDOWN.sub(" ", text).split())
    return clean if re.search(r"[^\W_]", clean) else ""


class Dialogue:
    """A conversation's state: the persona's instructions, the history, and where to speak."""

    def __init__(
        self,
        triton: TritonClient,
        chat: llm.ChatClient,
        voice: Path,
        *,
        system_prompt: str,
        context: str = "",
        tools: Sequence[Mapping[str, Any]] = (),
        language: str = "en",
    ) -> None:
        self.triton, self.chat, self.voice = triton, chat, voice
        self.system_prompt, self.context, self.tools = system_prompt, context, tools
        self.language = language
        self.history: list[dict[str, Any]] = []

    async def hear(self, audio: Audio) -> str:
        """The person's turn (16 kHz) as text, added to the history; "" (and nothing added)
        when the VAD finds no speech in it or speech-to-text no words.
        """
        # Whisper hears words in silence and noise ("You"): only speech is transcribed.
        samples = audio.samples.astype(np.float32)
        samples = np.pad(samples, (0, (-len(samples)) % vad.CHUNK))
        probs, _ = await self.triton.vad(samples)
        if not vad.segments(probs):
            return ""
        heard = await self.triton.transcribe(audio, language=self.language)
        text = str(heard.get("text", "")).strip()
        if text:
            self.history.append({"role": "user", "content": text})
        return text

    def cut_reply(self, played: str) -> None:
        """The last reply was cut off after `played` (the words the person heard, perhaps
        fewer than were written): the history keeps those, marked as cut off.
        """
        for message in reversed(self.history):
            if message["role"] == "assistant":
                message["content"] = played + INTERRUPTED
                return

    async def reply(self) -> AsyncGenerator[Spoken, None]:
        """The persona's answer to the history so far, sentence by sentence in the replica's
        voice. Close the generator to interrupt it (`contextlib.aclosing`).
        """
        messages = llm.persona_messages(self.system_prompt, self.context, self.history)
        said: list[str] = []
        finished = False
        try:
            async with contextlib.aclosing(self.chat.stream(messages, self.tools)) as texts:
                async for written in llm.sentences(texts):
                    sentence = speakable(written)
                    if not sentence:
                        continue
                    audio, timings = await self.triton.say(self.voice, sentence)
                    said.append(sentence)
                    yield Spoken(sentence, audio, timings)
            finished = True
        finally:
            text = " ".join(said)
            if text or not finished:
                self.history.append(
                    {"role": "assistant", "content": text + ("" if finished else INTERRUPTED)}
                )
