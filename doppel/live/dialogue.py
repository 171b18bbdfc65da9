"""One turn of a live conversation, once the person has finished speaking (doppel.live.turns).

Their words go through speech-to-text (Triton's `stt`); the persona's reply comes from its LLM
(doppel.live.llm), streamed; each sentence is spoken in the replica's cloned voice (Triton's
`voice`) as soon as the LLM has finished writing it, so the caller can play (and lip-sync) the
first sentence while the rest is still being written.

An interruption (the person starts speaking again: `TurnEvent("speech_started")`) is the caller
closing the reply generator: the LLM's stream is closed at once, so the model stops writing, and
the history keeps only what was said, marked as cut off, so the next reply knows.

Tools (doppel.live.tools): the built-in ones are answered here and the model asked again; the
others are handed to `on_tool` (the client runs them) and the reply ends there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio import vad
from doppel.audio.media import Audio
from doppel.live import llm
from doppel.live import tools as toolbox
from doppel.triton import TritonClient

#: Appended to a reply the person cut off, in the history the LLM reads next.
INTERRUPTED = " [interrupted by the user]"
#: Added to every persona's instructions: the reply is heard, not read.
SPOKEN = (
    "You are speaking aloud in a live video call: answer in one to three short sentences, "
    "with no lists, markdown or emoji."
)
#: Rounds of built-in tool calls answered within one reply before it ends.
MAX_TOOL_ROUNDS = 3


def _unmarked(stage: str) -> None:
    pass


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
        timezone: str | None = None,
        first_clause: int = 0,
        built_in_tools: bool = True,
    ) -> None:
        self.triton, self.chat, self.voice = triton, chat, voice
        self.system_prompt, self.context = system_prompt, context
        #: What the LLM is offered: the persona's tools and the built-in ones.
        self.tools = toolbox.offered(tools, built_in=built_in_tools)
        self.language, self.timezone = language, timezone
        #: The first piece of a reply may end at a clause this long (llm.sentences; 0: off).
        self.first_clause = first_clause
        self.history: list[dict[str, Any]] = []

    async def hear(self, audio: Audio, *, keep: bool = True) -> str:
        """The person's turn (16 kHz) as text, added to the history (with `keep`); "" (and
        nothing added) when the VAD finds no speech in it or speech-to-text no words.
        """
        # Whisper hears words in silence and noise ("You"): only speech is transcribed.
        samples = audio.samples.astype(np.float32)
        samples = np.pad(samples, (0, (-len(samples)) % vad.CHUNK))
        probs, _ = await self.triton.vad(samples)
        if not vad.segments(probs):
            return ""
        # Greedy decoding: a turn is a few words; beam 5 (the batch default) costs ~0.1 s more.
        heard = await self.triton.transcribe(audio, language=self.language, beam_size=1)
        text = str(heard.get("text", "")).strip()
        if text and keep:
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

    async def reply(
        self,
        mark: Callable[[str], None] = _unmarked,
        on_tool: Callable[[llm.ToolCall], None] | None = None,
    ) -> AsyncGenerator[Spoken, None]:
        """The persona's answer to the history so far, sentence by sentence in the replica's
        voice. Close the generator to interrupt it (`contextlib.aclosing`).

        `mark(stage)` is called as the first of each happens: `llm_first_text`,
        `first_sentence`, `voice` (its audio synthesised). Built-in tool calls are answered and
        the model asked again; the client's are given to `on_tool`, and the reply ends.
        """
        said: list[str] = []
        finished = False
        marked: set[str] = set()

        def once(stage: str) -> None:
            if stage not in marked:
                marked.add(stage)
                mark(stage)

        try:
            offer: list[dict[str, Any]] = self.tools
            recognise: list[str] = []
            for _ in range(MAX_TOOL_ROUNDS + 1):
                self._note_time()
                prompt = f"{self.system_prompt.strip()}\n\n{SPOKEN}".strip()
                messages = llm.persona_messages(prompt, self.context, self.history)
                answer = llm.Reply()
                stream = self.chat.stream(messages, offer, answer, recognise=recognise)
                async with contextlib.aclosing(stream) as texts:
                    pieces = llm.sentences(
                        _first(texts, once), first_clause=0 if said else self.first_clause
                    )
                    async for written in pieces:
                        sentence = speakable(written)
                        if not sentence:
                            continue
                        once("first_sentence")
                        audio, timings = await self.triton.say(self.voice, sentence)
                        once("voice")
                        said.append(sentence)
                        yield Spoken(sentence, audio, timings)
                calls = _distinct(answer.tool_calls)
                built_in = [c for c in calls if c.name in toolbox.BUILT_IN]
                for call in calls:
                    if call not in built_in and on_tool is not None:
                        on_tool(call)
                if not built_in or len(built_in) < len(calls):
                    break
                self._answer_tools(built_in, answer)
                if answer.calls_in_text:  # not offered again: a small model calls in a loop
                    offer, recognise = [], [t["function"]["name"] for t in self.tools]
            finished = True
        finally:
            text = " ".join(said)
            if text or not finished:
                self.history.append(
                    {"role": "assistant", "content": text + ("" if finished else INTERRUPTED)}
                )

    def _note_time(self) -> None:
        """The time now, as a system message before the person's last message, kept in the
        history (a new note only when the minute changed): the prompt's prefix stays the same
        from request to request, so the LLM server's prompt cache holds it.
        """
        note = toolbox.time_note(self.timezone)
        notes = [m for m in self.history if m["role"] == "system"]
        if notes and notes[-1]["content"] == note["content"]:
            return
        users = [i for i, m in enumerate(self.history) if m["role"] == "user"]
        self.history.insert(users[-1] if users else len(self.history), note)

    def _answer_tools(self, calls: Sequence[llm.ToolCall], answer: llm.Reply) -> None:
        """The built-in tools' answers in the history: as tool messages after the model's
        calls, or, for a server that took the calls as text, as one system message.
        """
        results = [(call, toolbox.answer(call.name, self.timezone)) for call in calls]
        if answer.calls_in_text:
            said = " ".join(f"{call.name}: {result}" for call, result in results)
            self.history.append(
                {
                    "role": "system",
                    "content": f"Tool results. {said} Use them to answer the user directly, in "
                    "your own words.",
                }
            )
            return
        self.history.append(
            {
                "role": "assistant",
                "content": answer.text,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments or "{}"},
                    }
                    for call, _ in results
                ],
            }
        )
        for call, result in results:
            self.history.append({"role": "tool", "tool_call_id": call.id, "content": result})


async def _first(texts: AsyncIterator[str], mark: Callable[[str], None]) -> AsyncIterator[str]:
    """`texts`, marking `llm_first_text` at the first."""
    async for text in texts:
        mark("llm_first_text")
        yield text


def _distinct(calls: Sequence[llm.ToolCall]) -> list[llm.ToolCall]:
    """The calls without repeats (a small model writes the same call twice)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for call in calls:
        try:
            key = (call.name, json.dumps(json.loads(call.arguments or "{}"), sort_keys=True))
        except json.JSONDecodeError:
            key = (call.name, call.arguments)
        if key not in seen:
            seen.add(key)
            out.append(call)
    return out
