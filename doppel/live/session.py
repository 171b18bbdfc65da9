"""A live conversation on a call: the person's microphone in, the replica's answers out.

The microphone (48 kHz Opus from the browser, decoded by aiortc) is resampled to 16 kHz and runs
through Triton's streaming `vad`; `turns.TurnDetector` says when the person starts speaking and
when their turn has ended. At the end of a turn, `dialogue.Dialogue` hears it (Whisper), the
persona's LLM answers sentence by sentence in the cloned voice, and each sentence is spoken by
the `avatar` on the call's one media clock. When the person starts speaking over the replica,
or `conversation.interrupt` arrives, the reply stops: the avatar drops what is queued and its
render, the LLM's stream is closed, and the history keeps what was said, marked as cut off.

Events (Tavus's names) go out through the `Outbox`. Inbound messages on the data channel (and
`POST /interactions`) arrive at `handle`.

The replica's utterance and `stopped_speaking` are sent when its speech has played out; a cut
reply keeps the sentences played. Not yet (issue 17 goes on): word-level cuts, the built-in
and client-side tools, more speech needed to interrupt while the replica talks (echo), per-turn
latency timings, and the greeting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import av
import numpy as np

from doppel.audio.media import Audio
from doppel.audio.vad import CHUNK, RATE, StreamState
from doppel.live.avatar import Avatar
from doppel.live.clock import SLOT_S
from doppel.live.dialogue import Dialogue, Spoken
from doppel.live.events import Outbox
from doppel.live.turns import TurnDetector, TurnEvent, TurnOptions
from doppel.triton import TritonClient

log = logging.getLogger(__name__)

USER = "user"
REPLICA = "replica"


class Conversation:
    """One call's conversation: hearing, answering, speaking and being interrupted.

    `keep(role, text)`: the transcript as it happens (the caller records it).
    """

    def __init__(
        self,
        avatar: Avatar,
        dialogue: Dialogue,
        triton: TritonClient,
        outbox: Outbox,
        *,
        keep: Callable[[str, str], None] = lambda role, text: None,
        options: TurnOptions | None = None,
    ) -> None:
        self.avatar, self.dialogue, self.triton, self.outbox = avatar, dialogue, triton, outbox
        self.keep = keep
        self.detector = TurnDetector(options or TurnOptions())
        self.turn_idx = 0
        self._reply: asyncio.Task[None] | None = None
        self._speaking_since: float | None = None

    @property
    def speaking(self) -> bool:
        return self._reply is not None and not self._reply.done()

    # --- the person's side ----------------------------------------------------------------------

    async def listen(self, track: Any) -> None:
        """Read the client's microphone track until it ends.

        Reading and the VAD run apart: the VAD takes everything that arrived since its last
        call in one request, so a VAD slowed by rendering on the same cores catches up instead
        of falling further behind the person's voice.
        """
        arrived: list[np.ndarray] = []
        ready = asyncio.Event()

        async def read() -> None:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            try:
                while True:
                    frame = await track.recv()
                    arrived.extend(
                        out.to_ndarray().reshape(-1) for out in resampler.resample(frame)
                    )
                    ready.set()
            finally:
                ready.set()

        reader = asyncio.create_task(read())
        state = StreamState()
        pending = np.zeros(0, np.float32)
        try:
            while not reader.done() or arrived:
                await ready.wait()
                ready.clear()
                pending = np.concatenate([pending, *arrived])
                arrived.clear()
                whole = len(pending) - len(pending) % CHUNK
                if whole == 0:
                    continue
                samples, pending = pending[:whole], pending[whole:]
                probs, state = await self.triton.vad(samples, state)
                for event in self.detector.push(samples, probs):
                    self._turn_event(event)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    def _turn_event(self, event: TurnEvent) -> None:
        if event.kind == "speech_started":
            self.outbox.emit("conversation.user.started_speaking", turn_idx=self.turn_idx)
            if self.speaking:
                self.interrupt()
        elif event.audio is not None:
            self.outbox.emit("conversation.user.stopped_speaking", turn_idx=self.turn_idx)
            self._start(self._answer(Audio(event.audio, RATE)))

    def _start(self, work: Any) -> None:
        if self.speaking:
            self.interrupt()
        self._reply = asyncio.create_task(work)

    async def _answer(self, heard: Audio) -> None:
        text = await self.dialogue.hear(heard)
        if not text:
            return
        self.outbox.emit(
            "conversation.utterance", {"role": USER, "speech": text}, turn_idx=self.turn_idx
        )
        self.keep(USER, text)
        await self._reply_to_history()

    async def _reply_to_history(self) -> None:
        await self._speak(self.dialogue.reply(), reply=True)

    async def _speak(self, sentences: AsyncIterator[Spoken], *, reply: bool) -> None:
        """Speak each sentence as it comes, then wait for the last to be played. Cancelled (an
        interruption), only what was played counts: the utterance and, for an LLM reply, the
        history are cut there (at a sentence's end).
        """
        clock = self.avatar.clock
        said: list[tuple[Spoken, int]] = []  # each sentence and the slot its speech starts at
        interrupted = False
        try:
            async with contextlib.aclosing(sentences) as spoken:  # type: ignore[type-var]
                async for sentence in spoken:
                    self._started()
                    start = clock.made + clock.queued
                    if (await self.avatar.speak(sentence.audio)).interrupted:
                        # The avatar swallows the cancellation of its render: pass it on.
                        raise asyncio.CancelledError
                    said.append((sentence, start))
                    self.outbox.emit(
                        "conversation.utterance.streaming",
                        {"speech": sentence.text, "final": False, "is_interrupted": False},
                        turn_idx=self.turn_idx,
                    )
            # The last sentence plays out: the clock takes one queued slot each SLOT_S.
            await asyncio.sleep(clock.queued * SLOT_S)
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            if interrupted:
                played = " ".join(filter(None, (heard(s, at, clock.made) for s, at in said)))
            else:
                played = " ".join(s.text for s, _ in said)
            if interrupted and reply:
                self.dialogue.cut_reply(played)
            if self._speaking_since is not None:
                self._said(played, interrupted=interrupted)

    # --- the replica's side ---------------------------------------------------------------------

    def _started(self) -> None:
        if self._speaking_since is None:
            self._speaking_since = time.monotonic()
            self.outbox.emit("conversation.replica.started_speaking", turn_idx=self.turn_idx)

    def _said(self, text: str, *, interrupted: bool) -> None:
        since = self._speaking_since or time.monotonic()
        self._speaking_since = None
        self.outbox.emit(
            "conversation.utterance", {"role": REPLICA, "speech": text}, turn_idx=self.turn_idx
        )
        self.outbox.emit(
            "conversation.replica.stopped_speaking",
            {"duration": round(time.monotonic() - since, 3), "interrupted": interrupted},
            turn_idx=self.turn_idx,
        )
        self.keep(REPLICA, text)
        self.turn_idx += 1

    def interrupt(self) -> None:
        """Barge-in: the reply in flight stops, the avatar drops its queued speech."""
        self.avatar.interrupt()
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()

    async def echo(self, text: str) -> None:
        """Speak `text` as it is, without the LLM (`conversation.echo`)."""

        async def one() -> AsyncIterator[Spoken]:
            audio, timings = await self.triton.say(self.dialogue.voice, text)
            yield Spoken(text, audio, timings)

        await self._speak(one(), reply=False)

    # --- inbound messages -----------------------------------------------------------------------

    def handle(self, message: Mapping[str, Any]) -> bool:
        """An inbound interaction (Tavus's names); False for one Doppel does not know (ignored
        and logged by the caller).
        """
        kind = message.get("event_type")
        props = message.get("properties") or {}
        if kind == "conversation.echo" and isinstance(props.get("text"), str):
            self._start(self.echo(props["text"]))
        elif kind == "conversation.respond" and isinstance(props.get("text"), str):
            self.dialogue.history.append({"role": "user", "content": props["text"]})
            self.keep(USER, props["text"])
            self._start(self._reply_to_history())
        elif kind == "conversation.interrupt":
            self.interrupt()
        elif kind == "conversation.append_llm_context" and isinstance(props.get("context"), str):
            self.dialogue.context = (self.dialogue.context + "\n" + props["context"]).strip()
        elif kind == "conversation.overwrite_llm_context" and isinstance(props.get("context"), str):
            self.dialogue.context = props["context"]
        else:
            return False
        return True

    async def close(self) -> None:
        """The call is over: the reply in flight stops and the LLM client closes."""
        if self._reply is not None:
            self._reply.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reply
        await self.dialogue.chat.close()


def heard(sentence: Spoken, start: int, now: int) -> str:
    """The words of `sentence` (its speech starting at slot `start`) played before slot `now`,
    by the voice's own word timings; the whole sentence when it has none and has played out.
    """
    words = sentence.timings.get("words") or []
    if not words:
        end = start + sentence.audio.duration_s / SLOT_S
        return sentence.text if end <= now else ""
    return " ".join(str(w["word"]) for w in words if start + float(w["end"]) / SLOT_S <= now)
