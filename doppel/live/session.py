"""A live conversation on a call: the person's microphone in, the replica's answers out.

The microphone (48 kHz Opus from the browser, decoded by aiortc) is resampled to 16 kHz and runs
through Triton's streaming `vad`; `turns.TurnDetector` says when the person starts speaking and
when their turn has ended. At the end of a turn, `dialogue.Dialogue` hears it (Whisper), the
persona's LLM answers sentence by sentence in the cloned voice, and each sentence is spoken by
the `avatar` on the call's one media clock.

Barge-in. The person starting to speak over the replica pauses it at once (its audio stops
within a slot; the face listens) but does not yet count as an interruption: the replica's own
voice coming back through the person's speakers, a cough or a "hm" must not cut it off. It
pauses at the first ~0.1 s of voice, before a turn has started, and resumes if no turn
follows. When the person's turn ends and it holds words (Whisper), the reply is interrupted:
the avatar drops what is queued and its render, the LLM's stream is closed, and the utterance
and the history keep the words played (the voice's word timings against the clock), marked
as cut off; then the new turn is answered. When it holds no words, the reply resumes where
it paused. `conversation.interrupt` interrupts at once, and so does any speech with
`participant_interrupt_sensitivity: high`; `low` needs three words.

Events (Tavus's names) go out through the `Outbox` when they happen to the person: the
replica's `started_speaking` when its first speaking slot plays, its utterance and
`stopped_speaking` when the last has. Inbound messages on the data channel (and
`POST /interactions`) arrive at `handle`.

Every turn's latency is measured from the end of the person's speech (its last voiced audio,
on the wall clock): the turn detected, the transcript, the LLM's first text and first sentence,
the first sentence's voice, its first frames rendered, and its first slot played; `keep_turn`
receives them when the turn ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import av
import numpy as np

from doppel.audio.media import Audio, resample
from doppel.audio.vad import CHUNK, RATE, StreamState
from doppel.live.avatar import Avatar
from doppel.live.clock import SLOT_S
from doppel.live.dialogue import Dialogue, Spoken
from doppel.live.events import Outbox
from doppel.live.llm import ToolCall
from doppel.live.turns import TurnDetector, TurnEvent, TurnOptions

log = logging.getLogger(__name__)

USER = "user"
REPLICA = "replica"
SENSITIVITY = ("low", "medium", "high")
#: `participant_pause_sensitivity`: the silence that ends the person's turn.
PAUSE_S = {"low": 1.2, "medium": 0.7, "high": 0.45}
#: `participant_interrupt_sensitivity`: words the person must say over the replica to
#: interrupt it (0: any speech interrupts at once).
INTERRUPT_WORDS = {"low": 3, "medium": 1, "high": 0}
#: Voice over the replica this long in a row pauses it (a turn needs TurnOptions.start_s).
VOICE_S = 0.09
#: A pause with no turn started this long after it ends: the reply resumes.
HOLD_S = 0.6
#: Silence after which the turn so far is transcribed, before the turn has ended.
EARLY_TRANSCRIPT_S = 0.25


#: A turn's stages in the order they happen (Turn.record: `<stage>_s`, seconds from the end
#: of the person's speech): first_audio and first_frame are the same slot.
STAGES = (
    "turn_detected",
    "transcript",
    "llm_first_text",
    "first_sentence",
    "voice",
    "rendered",
    "first_audio",
    "first_frame",
)


@dataclasses.dataclass
class Turn:
    """One turn's timeline: seconds from `start` (the end of the person's speech, or the
    request that started the turn) to each stage, the first time it happens.
    """

    idx: int
    source: str  # speech | respond | echo | greeting | tool
    start: float  # time.monotonic()
    wall: float  # time.time() at `start`
    stages: dict[str, float] = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    #: Names the replica's events of this turn (Tavus's `inference_id`).
    inference_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def mark(self, stage: str) -> None:
        self.stages.setdefault(stage, round(time.monotonic() - self.start, 3))

    def record(self) -> dict[str, Any]:
        return {
            "turn_idx": self.idx,
            "inference_id": self.inference_id,
            "source": self.source,
            "at": self.wall,
            "interrupted": self.interrupted,
            **{f"{k}_s": v for k, v in self.stages.items()},
        }


def _no_turn(turn: Mapping[str, Any]) -> None:
    pass


class Conversation:
    """One call's conversation: hearing, answering, speaking and being interrupted.

    `keep(role, text)`: the transcript as it happens; `keep_turn(timings)`: each turn's
    latencies (the caller records both).
    """

    def __init__(
        self,
        avatar: Avatar,
        dialogue: Dialogue,
        outbox: Outbox,
        *,
        keep: Callable[[str, str], None] = lambda role, text: None,
        keep_turn: Callable[[Mapping[str, Any]], None] = _no_turn,
        options: TurnOptions | None = None,
        early_transcript_s: float | None = EARLY_TRANSCRIPT_S,
    ) -> None:
        self.avatar, self.dialogue, self.outbox = avatar, dialogue, outbox
        #: Transcribe once the person has been silent this long, while the end-of-turn
        #: silence runs on (a latency lever; None: at the turn's end).
        self.early_transcript_s = early_transcript_s
        #: Called with the person's microphone as it arrives (16 kHz float mono): a recording.
        self.heard: Callable[[np.ndarray], None] | None = None
        self._early: tuple[int, asyncio.Task[str]] | None = None
        self.triton = dialogue.triton
        self.keep, self.keep_turn = keep, keep_turn
        self.detector = TurnDetector(options or TurnOptions())
        self.interrupt_words = INTERRUPT_WORDS["medium"]
        self.turn_idx = 0
        self._reply: asyncio.Task[None] | None = None
        self._speaking_since: float | None = None
        self._held = False  # the reply is paused: the person spoke over it
        self._turn: Turn | None = None
        #: Set when the microphone track ends (the person left or their peer closed).
        self.left = asyncio.Event()
        self._tool_pending = False
        self._hearing: asyncio.Task[None] | None = None
        self._voiced = 0  # VAD chunks of speech in a row
        self._held_at = 0.0

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
                    got = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
                    arrived.extend(got)
                    if self.heard is not None:
                        for samples in got:
                            self.heard(samples)
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
                now = time.monotonic()
                heard_to = self.detector.heard_s + len(samples) / RATE  # stream time of `now`
                self._voice_over_reply(probs, now)
                for event in self.detector.push(samples, probs):
                    self._turn_event(event, now - (heard_to - event.at_s))
                self._transcribe_early()
                if (
                    self._held
                    and not self.detector.in_turn
                    and not self.speaking_user
                    and now - self._held_at > HOLD_S
                ):
                    self._resume()  # the voice over the reply was no turn: noise, a click
        finally:
            self.left.set()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    @property
    def speaking_user(self) -> bool:
        """The person's turn is being heard (transcribed) after it ended."""
        return self._hearing is not None and not self._hearing.done()

    def _turn_event(self, event: TurnEvent, at: float) -> None:
        if event.kind == "speech_started":
            self.outbox.emit("conversation.user.started_speaking", turn_idx=self.turn_idx)
            if self.speaking:
                if self.interrupt_words == 0:
                    self.interrupt()
                else:
                    self._hold()
            return
        if event.audio is None:
            return
        self.outbox.emit("conversation.user.stopped_speaking", turn_idx=self.turn_idx)
        turn = Turn(self.turn_idx, "speech", at, time.time() - (time.monotonic() - at))
        turn.mark("turn_detected")
        early, self._early = self._early, None
        if early is not None and early[0] != len(event.audio):
            early[1].cancel()  # the person spoke again after it began: not this turn
            early = None
        audio = Audio(event.audio, RATE)
        heard = early[1] if early is not None else None
        self._hearing = asyncio.create_task(self._heard(audio, turn, heard))

    async def _heard(self, audio: Audio, turn: Turn, early: asyncio.Task[str] | None) -> None:
        """The person's turn: transcribed (or its early transcript taken), then answered;
        over a paused reply, an interruption only when it holds words (else it resumes).
        """
        try:
            text = await (early or self.dialogue.hear(audio, keep=False))
        except Exception:
            log.exception("conversation %s: hearing a turn failed", self.outbox.conversation_id)
            text = ""
        turn.mark("transcript")
        if self._held:
            if len(text.split()) < max(1, self.interrupt_words):
                self._resume()
                return
            self.interrupt()
            await self._settle()
        if not text:
            return
        self.dialogue.history.append({"role": "user", "content": text})
        self.outbox.emit(
            "conversation.utterance", {"role": USER, "speech": text}, turn_idx=self.turn_idx
        )
        self.keep(USER, text)
        turn.idx = self.turn_idx
        self._start(self._reply_to_history(turn))

    def _transcribe_early(self) -> None:
        """Once the person has paused for `early_transcript_s`, transcribe their turn so far:
        if the turn ends with no more speech, its transcript is ready (or nearly) when it does.
        """
        if self.early_transcript_s is None or self.detector.silence_s < self.early_transcript_s:
            return
        speech = self.detector.speech_so_far()
        if speech is None or (self._early is not None and self._early[0] == len(speech)):
            return
        heard = asyncio.create_task(self.dialogue.hear(Audio(speech, RATE), keep=False))
        heard.add_done_callback(lambda t: t.cancelled() or t.exception())  # never unseen
        self._early = (len(speech), heard)

    def _voice_over_reply(self, probs: np.ndarray, now: float) -> None:
        """Pause the reply as soon as the person's voice is heard over it (VOICE_S of speech in
        a row, before a turn starts): pausing is cheap and undone when no turn follows.
        """
        threshold = self.detector.options.threshold
        for p in np.asarray(probs).reshape(-1):
            self._voiced = self._voiced + 1 if p >= threshold else 0
        if (
            self._voiced * CHUNK / RATE >= VOICE_S
            and self.speaking
            and not self._held
            and self.interrupt_words > 0
        ):
            self._hold(now)

    def _hold(self, now: float | None = None) -> None:
        """The person spoke over the reply: pause it (silent at once) until their turn is
        heard.
        """
        if not self._held:
            self._held_at = time.monotonic() if now is None else now
        self._held = True
        self.avatar.clock.pause()

    def _resume(self) -> None:
        self._held = False
        self.avatar.clock.resume()

    def _start(self, work: Any) -> None:
        if self.speaking:
            self.interrupt()
        self._reply = asyncio.create_task(work)

    async def _settle(self) -> None:
        """Wait for the interrupted reply to finish cutting (its events and history)."""
        reply = self._reply
        if reply is not None and reply is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await reply

    async def _reply_to_history(self, turn: Turn) -> None:
        self._turn = turn
        await self._speak(self.dialogue.reply(mark=turn.mark, on_tool=self._tool_call), turn)

    def _tool_call(self, call: ToolCall) -> None:
        """A tool of the client's: sent to it; its answer continues the turn."""
        self._tool_pending = True
        try:
            arguments: Any = call.arguments_json()
        except Exception:
            arguments = call.arguments
        self.outbox.emit(
            "conversation.tool_call",
            {"name": call.name, "arguments": arguments, "tool_call_id": call.id},
            turn_idx=self.turn_idx,
        )

    async def _speak(self, sentences: AsyncIterator[Spoken], turn: Turn) -> None:
        """Speak each sentence as it comes, then wait for the last to be played. Cancelled (an
        interruption), only what was played counts: the utterance and, for an LLM reply, the
        history are cut at the last word played.
        """
        clock = self.avatar.clock
        said: list[tuple[Spoken, int]] = []  # each sentence and the speaking position it began
        interrupted = False
        loop = asyncio.get_running_loop()
        played_out: asyncio.Future[int] | None = None
        try:
            async with contextlib.aclosing(sentences) as spoken:  # type: ignore[type-var]
                async for sentence in spoken:
                    started: asyncio.Future[int] = loop.create_future()
                    played_out = loop.create_future()

                    def on_start(position: int, s: Spoken = sentence, f: Any = started) -> None:
                        if not f.done():
                            f.set_result(position)
                        said.append((s, position))
                        self._started(turn)
                        self.outbox.emit(
                            "conversation.utterance.streaming",
                            {"speech": s.text, "final": False, "is_interrupted": False},
                            turn_idx=self.turn_idx,
                            inference_id=turn.inference_id,
                        )

                    def on_end(position: int, f: Any = played_out) -> None:
                        if not f.done():
                            f.set_result(position)

                    utterance = await self.avatar.speak(
                        sentence.audio,
                        on_start=on_start,
                        on_end=on_end,
                        on_ready=lambda: turn.mark("rendered"),
                    )
                    if utterance.interrupted:
                        # The avatar swallows the cancellation of its render: pass it on.
                        raise asyncio.CancelledError
            if played_out is not None:
                await played_out
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            now = clock.spoken
            if interrupted:
                played = " ".join(filter(None, (heard(s, at, now) for s, at in said)))
                if turn.source != "echo":  # an echo is not in the LLM's history
                    self.dialogue.cut_reply(played)
            else:
                played = " ".join(s.text for s, _ in said)
            turn.interrupted = interrupted
            if self._speaking_since is not None:
                self._said(played, turn)
            self._held = False
            self._finish(turn)

    def _finish(self, turn: Turn) -> None:
        if self._turn is turn:
            self._turn = None
        try:
            self.keep_turn(turn.record())
        except Exception:
            log.exception("keeping a turn's timings failed")

    # --- the replica's side ---------------------------------------------------------------------

    def _started(self, turn: Turn) -> None:
        if self._speaking_since is None:
            self._speaking_since = time.monotonic()
            turn.mark("first_audio")
            turn.mark("first_frame")
            # Doppel's addition to Tavus's event: the person's wait, end of speech to this.
            latency = {"latency_s": turn.stages["first_audio"]} if turn.source == "speech" else {}
            self.outbox.emit(
                "conversation.replica.started_speaking",
                latency,
                turn_idx=self.turn_idx,
                inference_id=turn.inference_id,
            )

    def _said(self, text: str, turn: Turn) -> None:
        since = self._speaking_since or time.monotonic()
        self._speaking_since = None
        self.outbox.emit(
            "conversation.utterance.streaming",
            {"speech": text, "final": True, "is_interrupted": turn.interrupted},
            turn_idx=self.turn_idx,
            inference_id=turn.inference_id,
        )
        self.outbox.emit(
            "conversation.utterance",
            {"role": REPLICA, "speech": text},
            turn_idx=self.turn_idx,
            inference_id=turn.inference_id,
        )
        self.outbox.emit(
            "conversation.replica.stopped_speaking",
            {"duration": round(time.monotonic() - since, 3), "interrupted": turn.interrupted},
            turn_idx=self.turn_idx,
            inference_id=turn.inference_id,
        )
        self.keep(REPLICA, text)
        self.turn_idx += 1

    def interrupt(self) -> None:
        """Barge-in: the reply in flight stops, the avatar drops its queued speech."""
        self.avatar.interrupt()
        self._held = False
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()

    def say(self, text: str, source: str = "echo") -> None:
        """Speak `text` as it is, without the LLM (`conversation.echo`, the greeting); a
        greeting joins the history as the replica's words.
        """
        turn = Turn(self.turn_idx, source, time.monotonic(), time.time())
        if source == "greeting":
            self.dialogue.history.append({"role": "assistant", "content": text})
        self._start(self._speak(self._one(text, turn), turn))

    async def _one(self, text: str, turn: Turn) -> AsyncIterator[Spoken]:
        audio, timings = await self.triton.say(self.dialogue.voice, text)
        turn.mark("voice")
        yield Spoken(text, audio, timings)

    # --- inbound messages -----------------------------------------------------------------------

    def handle(self, message: Mapping[str, Any]) -> bool:
        """An inbound interaction (Tavus's names); False for one Doppel does not know (ignored
        and logged by the caller).
        """
        kind = message.get("event_type")
        props = message.get("properties") or {}
        if not isinstance(props, Mapping):
            return False
        text, context = props.get("text"), props.get("context")
        if kind == "conversation.echo" and props.get("modality") == "audio":
            audio = _echo_audio(props)
            if audio is None:
                return False
            turn = Turn(self.turn_idx, "echo", time.monotonic(), time.time())
            spoken = Spoken(text if isinstance(text, str) else "", audio, {})
            self._tool_pending = False
            self._start(self._speak(_one_piece(spoken), turn))
        elif kind == "conversation.echo" and isinstance(text, str) and text.strip():
            self._tool_pending = False
            self.say(text.strip())
        elif kind == "conversation.respond" and isinstance(text, str) and text.strip():
            self.dialogue.history.append({"role": "user", "content": text.strip()})
            self.keep(USER, text.strip())
            turn = Turn(self.turn_idx, "respond", time.monotonic(), time.time())
            self._start(self._reply_to_history(turn))
        elif kind == "conversation.interrupt":
            self.interrupt()
        elif kind == "conversation.append_llm_context" and isinstance(context, str):
            self.dialogue.context = (self.dialogue.context + "\n" + context).strip()
            if self._tool_pending and not self.speaking:  # the client's tool answered
                self._tool_pending = False
                turn = Turn(self.turn_idx, "tool", time.monotonic(), time.time())
                self._start(self._reply_to_history(turn))
        elif kind == "conversation.overwrite_llm_context" and isinstance(context, str):
            self.dialogue.context = context
        elif kind == "conversation.sensitivity" and self.sensitivity(props):
            pass
        else:
            return False
        return True

    def sensitivity(self, props: Mapping[str, Any]) -> bool:
        """`participant_pause_sensitivity` (how soon a pause ends the person's turn) and
        `participant_interrupt_sensitivity` (how readily speech over the replica interrupts
        it), each low / medium / high; False when neither is given right.
        """
        pause = props.get("participant_pause_sensitivity")
        interrupt = props.get("participant_interrupt_sensitivity")
        if pause not in SENSITIVITY and interrupt not in SENSITIVITY:
            return False
        if pause in SENSITIVITY:
            self.detector.set_end_silence(PAUSE_S[pause])
        if interrupt in SENSITIVITY:
            self.interrupt_words = INTERRUPT_WORDS[interrupt]
        return True

    async def close(self) -> None:
        """The call is over: the reply in flight stops and the LLM client closes."""
        if self._early is not None:
            self._early[1].cancel()
        for task in (self._reply, self._hearing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.dialogue.chat.close()


#: Longest audio an echo may carry (base64 characters: ~60 s of 24 kHz 16-bit PCM).
MAX_ECHO_CHARS = 4_000_000


def _echo_audio(props: Mapping[str, Any]) -> Audio | None:
    """`conversation.echo` with `modality: "audio"`: `audio` is base64 of 16-bit little-endian
    mono PCM at `sample_rate` (24000 when not given), as Tavus sends it, or of a WAV file;
    None when it is not.
    """
    import base64
    import binascii
    import io

    encoded, rate = props.get("audio"), props.get("sample_rate", 24000)
    if not isinstance(encoded, str) or not 0 < len(encoded) <= MAX_ECHO_CHARS:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 96000:
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:4] == b"RIFF":
        import soundfile

        try:
            samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError):
            return None
        mono = samples.mean(axis=1)
    else:
        mono = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    if len(mono) < 0.2 * rate:
        return None
    return Audio(resample(mono, rate, RATE) if rate != RATE else mono, RATE)


async def _one_piece(spoken: Spoken) -> AsyncIterator[Spoken]:
    yield spoken


def heard(sentence: Spoken, start: int, now: int) -> str:
    """The words of `sentence` (its speech starting at speaking position `start`) played
    before position `now`, by the voice's own word timings; the whole sentence when it has
    none and has played out.
    """
    slot_s = SLOT_S
    words = sentence.timings.get("words") or []
    if not words:
        end = start + sentence.audio.duration_s / slot_s
        return sentence.text if end <= now else ""
    return " ".join(str(w["word"]) for w in words if start + float(w["end"]) / slot_s <= now)
