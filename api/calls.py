"""Live calls held by this API process: a conversation's WebRTC session joined to its record.

Records and engine meet here, for calls, as they meet in `orchestrator/jobs/` for batch work:
`doppel.live` (the replica's avatar on one media clock, the aiortc peer, the events envelope)
knows no tables, and this module writes what happens on a call to the conversation's row.

Where a call runs: in the API process that answered its offer, on its event loop (aiortc is
asyncio, and the avatar renders through the same Triton client the API already holds). Past one
machine, the API processes of each machine hold the calls they answered; a load balancer sends a
conversation's offer, interactions and end to the machine holding it (the conversation row is
the place to record which), and the capacity check refuses a call a machine cannot serve.

Lifecycle: the offer starts the call (`system.replica_joined` on the data channel, then the
`custom_greeting` spoken); it ends with `system.shutdown` and a reason (Tavus's words) when the
end endpoint is hit, the conversation is deleted, `max_call_duration` passes, nobody connected
within `participant_absent_timeout` of its creation, the person left (their peer closed or
failed, or their microphone ended) and did not come back within `participant_left_timeout`,
or the API shuts down.

Capacity: a machine serves `max_calls` video calls at once (DOPPEL_MAX_CALLS; by default one
per two CPU cores: on 2 cores one call's render, VP8 encoding, VAD, Whisper and LLM already fill
the machine). A conversation holds its seat from its creation until it ends; one more is a 503
with Retry-After rather than every call on the machine falling behind real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import asyncpg

from doppel.domain import conversations, personas, replicas, webhooks
from doppel.domain.conversations import ConversationRow
from doppel.errors import AtCapacity, Conflict, NotFound
from doppel.live import llm
from doppel.live.avatar import Avatar
from doppel.live.dialogue import Dialogue
from doppel.live.events import REPLICA_JOINED, SHUTDOWN, Outbox
from doppel.live.recording import Recorder
from doppel.live.session import REPLICA, Conversation
from doppel.live.webrtc import Call
from doppel.platform.storage import LocalStorage
from doppel.replica.artefact import Replica
from doppel.settings import Settings
from doppel.triton import TritonClient

log = logging.getLogger(__name__)

MAX_DURATION = "max_call_duration reached"
ABSENT = "participant_absent_timeout reached"
LEFT = "participant_left_timeout reached"
TRANSCRIPTION_READY = "application.transcription_ready"
RECORDING_READY = "application.recording_ready"
#: Longest reply the persona's LLM may write in a call (tokens).
REPLY_TOKENS = 120
#: Spoken nowhere: rendered as a call starts, to load the replica's models and time its render.
WARM_UP = "Hello, it is good to see you. How can I help you today?"
SERVER_SHUTDOWN = "server_shutdown"
#: Longest wait for the data channel to hand `system.shutdown` over before the peer closes.
DRAIN_S = 1.0


@dataclasses.dataclass(eq=False)
class LiveCall:
    conversation_id: str
    avatar: Avatar
    call: Call
    outbox: Outbox
    talk: Conversation
    started: float
    properties: dict[str, Any]
    tasks: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set)
    tenant_id: uuid.UUID | None = None
    #: The call's recording (`properties.enable_recording`), written when it ends.
    recorder: Recorder | None = None


class LiveCalls:
    """The calls of one API process, by conversation id."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        triton: TritonClient,
        notify: webhooks.Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.triton = triton
        #: Webhooks to the conversation's callback_url (None: none sent).
        self.notify = notify
        self.storage = LocalStorage(settings.data_dir)
        self._calls: dict[str, LiveCall] = {}
        self._waiting: dict[str, asyncio.Task[None]] = {}
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._writes: set[asyncio.Task[Any]] = set()
        self._ending: set[asyncio.Task[Any]] = set()  # `end`s in flight (close waits for them)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._calls

    def connected(self, conversation_id: str) -> bool:
        """Someone is in the conversation's call now (not gone and not leaving)."""
        return conversation_id in self._calls and conversation_id not in self._leaving

    @property
    def seats_taken(self) -> int:
        """Calls held and conversations waiting for their person."""
        return len(self._calls) + len(set(self._waiting) - set(self._calls))

    def check_capacity(self) -> None:
        """Refuse a new conversation when this machine's seats are all taken."""
        if self.seats_taken >= self.settings.max_calls:
            raise AtCapacity(
                f"This Doppel server is holding {self.seats_taken} live call(s), as many as it "
                f"serves in real time (DOPPEL_MAX_CALLS={self.settings.max_calls}). Try again "
                "when a call has ended, or end one (POST /v2/conversations/{id}/end)."
            )

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a record write beside the call; a failed write is logged, never the call's end."""
        task = asyncio.create_task(work)
        self._writes.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._writes.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("conversation record write failed: %s", t.exception())

        task.add_done_callback(done)

    def expect(self, item: ConversationRow) -> None:
        """A new active conversation: ended if nobody connects within its absent timeout."""
        if item.status != "active":
            return
        wait = float(item.properties["participant_absent_timeout"])

        async def absent() -> None:
            await asyncio.sleep(wait)
            if item.conversation_id not in self._calls:
                await self.end(item.conversation_id, ABSENT)

        self._waiting[item.conversation_id] = asyncio.create_task(absent())

    async def connect(
        self, item: ConversationRow, sdp: str, kind: str, *, restart: bool = False
    ) -> tuple[str, str, str]:
        """Answer the client's offer for an active conversation: (sdp, type, pc_id)."""
        cid = item.conversation_id
        if item.status != "active":
            raise Conflict(
                f"Conversation {cid} has ended ({item.shutdown_reason}); start a new one."
            )
        live = self._calls.get(cid)
        if live is not None and not restart:
            raise Conflict(
                f"Conversation {cid} is already connected; send restart_pc: true to replace its "
                "connection."
            )
        if live is not None:
            avatar = live.avatar
            await live.call.close()
        else:
            replica = Replica.load(await replicas.model_folder_of(self.pool, item.replica_id))
            if replica.voice_folder is None:
                raise Conflict(
                    f"Replica {item.replica_id} was trained without a voice: it cannot hold a "
                    "conversation. Train it with its voice."
                )
            avatar = await Avatar.load(
                replica, self.triton, stream_height=self.settings.stream_height
            )
        call = Call.configured(avatar.clock, self.settings, loopback=self.settings.ice_loopback)
        outbox = Outbox(cid, call.send, self._keeper(cid))
        tasks: set[asyncio.Task[Any]] = set()
        talk: Conversation | None = live.talk if live is not None else None
        try:
            if talk is None:
                talk = await self._conversation(item, avatar, outbox)
            listener = talk

            def track(received: Any) -> None:  # the client's microphone
                if received.kind == "audio":
                    listening = asyncio.create_task(listener.listen(received))
                    tasks.add(_logged(listening, cid, "listening"))
                    listening.add_done_callback(lambda _: self._left(cid, call))

            def state() -> None:
                if call.pc.connectionState in ("failed", "closed"):
                    self._left(cid, call)

            call.pc.on("track", track)
            call.pc.on("connectionstatechange", state)
            answer = await call.answer(sdp, kind)
        except BaseException:
            await call.close()
            if talk is not None and live is None:
                await talk.close()
            raise
        tasks.add(_logged(asyncio.create_task(self._inbound(cid, call, talk)), cid, "messages"))
        if live is not None:
            live.call, live.outbox, talk.outbox = call, outbox, outbox
            live.tasks |= tasks
            left = self._leaving.pop(cid, None)
            if left is not None:  # the person came back in time
                left.cancel()
            return answer
        waiting = self._waiting.pop(cid, None)
        if waiting is not None:
            waiting.cancel()
        live = LiveCall(
            cid,
            avatar,
            call,
            outbox,
            talk,
            time.time(),
            dict(item.properties),
            tasks,
            tenant_id=item.tenant_id,
        )
        if item.properties.get("enable_recording"):
            live.recorder = Recorder.create(avatar.size)
            avatar.clock.observers.append(live.recorder.slot)
            talk.heard = live.recorder.heard
        self._calls[cid] = live
        outbox.emit(REPLICA_JOINED, {"replica_id": item.replica_id})
        self._hook(cid, REPLICA_JOINED, "system", {"replica_id": item.replica_id})
        limit = float(item.properties["max_call_duration"])
        live.tasks.add(asyncio.create_task(self._end_after(cid, limit, MAX_DURATION)))
        if item.custom_greeting:
            # Rendered whole while the person's peer connects; it also measures the render rate.
            talk.say(item.custom_greeting, "greeting")
        else:
            live.tasks.add(_logged(asyncio.create_task(self._warm_up(talk)), cid, "warm-up"))
        return answer

    async def _warm_up(self, talk: Conversation) -> None:
        """A sentence rendered where nobody sees it, as the call starts (Avatar.warm_up)."""
        audio, _ = await self.triton.say(talk.dialogue.voice, WARM_UP)
        await talk.avatar.warm_up(audio)

    def _left(self, cid: str, call: Call) -> None:
        """The person's peer closed or failed, or their microphone ended: the call ends after
        `participant_left_timeout` unless they reconnect (`restart_pc`) before.
        """
        live = self._calls.get(cid)
        if live is None or live.call is not call or cid in self._leaving:
            return
        wait = float(live.properties.get("participant_left_timeout", 0))

        async def gone() -> None:
            await asyncio.sleep(wait)
            if self._leaving.get(cid) is asyncio.current_task():
                del self._leaving[cid]
                await self.end(cid, LEFT)

        self._leaving[cid] = _logged(asyncio.create_task(gone()), cid, "leaving")

    async def interact(self, conversation_id: str, message: dict[str, Any]) -> None:
        """An inbound interaction posted by a server (`POST /interactions`): as if sent on the
        call's data channel.
        """
        live = self._calls.get(conversation_id)
        if live is None:
            raise Conflict(
                f"Conversation {conversation_id} has no call in progress on this server: "
                "interactions reach a conversation while its person is connected."
            )
        if not live.talk.handle(message):
            raise NotFound(
                f"Unknown interaction {message.get('event_type')!r} (or its properties are "
                "missing): see the interactions protocol in the API documentation."
            )

    async def _conversation(
        self, item: ConversationRow, avatar: Avatar, outbox: Outbox
    ) -> Conversation:
        """The persona's side of the call: its prompt, context (with the conversation's own),
        tools and LLM, speaking in the replica's voice.
        """
        persona = await personas.get(self.pool, item.tenant_id, item.persona_id)
        layers = persona.document(with_key=True)["layers"]
        config = llm.config_for(layers, persona.llm_api_key, self.settings)
        # A safety cap (~90 words, ~35 s spoken): a small model can ignore "short" and talk
        # for a minute; a long reply also makes the next turn's prompt longer.
        config = dataclasses.replace(config, max_tokens=config.max_tokens or REPLY_TOKENS)
        context = "\n\n".join(c for c in (persona.context, item.conversational_context) if c)
        assert avatar.replica.voice_folder is not None
        dialogue = Dialogue(
            self.triton,
            llm.ChatClient(config),
            avatar.replica.voice_folder,
            system_prompt=persona.system_prompt,
            context=context,
            tools=(layers.get("llm") or {}).get("tools") or (),
            language=str(item.properties.get("language", "en")),
            timezone=(layers.get("llm") or {}).get("timezone"),
            first_clause=self.settings.first_clause_chars,
            built_in_tools=bool((layers.get("llm") or {}).get("base_url"))
            or self.settings.llm_tools,
        )
        cid = item.conversation_id

        def keep(role: str, text: str) -> None:
            when = dt.datetime.now(dt.UTC)
            spoken = "assistant" if role == REPLICA else "user"
            self._spawn(conversations.append_transcript(self.pool, cid, spoken, text, when))

        def keep_turn(turn: Any) -> None:
            self._spawn(conversations.record_turn(self.pool, cid, turn))

        talk = Conversation(
            avatar,
            dialogue,
            outbox,
            keep=keep,
            keep_turn=keep_turn,
            early_transcript_s=self.settings.early_transcript_s,
        )
        talk.sensitivity(layers.get("stt") or {})
        return talk

    async def _inbound(self, cid: str, call: Call, talk: Conversation) -> None:
        """Messages the client sends on the data channel: Tavus's interactions."""
        while True:
            message = await call.received.get()
            if not isinstance(message, dict) or not talk.handle(message):
                log.info("conversation %s: ignored an unknown interaction %.200r", cid, message)

    def _keeper(self, cid: str) -> Any:
        return lambda event: self._spawn(conversations.record_event(self.pool, cid, event))

    async def _end_after(self, cid: str, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        await self.end(cid, reason)

    async def end(self, conversation_id: str, reason: str) -> bool:
        """End the conversation's call (if this process holds one) and its record; True when
        this ended the record (False: it had ended already, its first reason stays).
        """
        me = asyncio.current_task()
        if me is not None:
            self._ending.add(me)
        try:
            return await self._end(conversation_id, reason)
        finally:
            self._ending.discard(me)  # type: ignore[arg-type]

    async def _end(self, conversation_id: str, reason: str) -> bool:
        for timers in (self._waiting, self._leaving):
            timer = timers.pop(conversation_id, None)
            if timer is not None and timer is not asyncio.current_task():
                timer.cancel()
        live = self._calls.pop(conversation_id, None)
        # The record first: once the client hears `system.shutdown`, the conversation reads ended.
        ended = await conversations.set_ended(self.pool, conversation_id, reason)
        if live is not None:
            live.outbox.emit(SHUTDOWN, {"shutdown_reason": reason, "reason": reason})
            await _drain(live.call)
            await live.talk.close()
            live.avatar.interrupt()
            stopping = [t for t in live.tasks if t is not asyncio.current_task()]
            for task in stopping:
                task.cancel()
            if stopping:  # their last record writes are spawned as they unwind
                await asyncio.wait(stopping, timeout=5)
            await live.call.close()
        if ended:
            self._hook(conversation_id, SHUTDOWN, "system", {"shutdown_reason": reason})
        if ended and live is not None:
            while self._writes:  # the transcript's last lines reach the row first
                await asyncio.gather(*list(self._writes), return_exceptions=True)
            transcript = await conversations.transcript(self.pool, conversation_id)
            said = [{"role": t["role"], "content": t["content"]} for t in transcript]
            self._hook(conversation_id, TRANSCRIPTION_READY, "application", {"transcript": said})
        if live is not None and live.recorder is not None:
            self._spawn(self._keep_recording(live, live.recorder))
        return ended

    async def _keep_recording(self, live: LiveCall, recorder: Recorder) -> None:
        """Write the ended call's MP4 into the tenant's storage, keep its link and send
        `application.recording_ready`; a failed recording is logged and the call's record
        stays as it is.
        """
        cid = live.conversation_id
        assert live.tenant_id is not None
        out = self.storage.path_for(live.tenant_id, "recordings", f"{cid}.mp4")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            duration = await asyncio.to_thread(recorder.finish, out)
        except Exception:
            log.exception("conversation %s: its recording could not be written", cid)
            return
        if duration is None:
            return
        if recorder.dropped:
            log.warning(
                "conversation %s: %d slots left out of the recording", cid, recorder.dropped
            )
        item = await conversations.recorded(self.pool, cid, out, duration)
        if item is None:  # deleted meanwhile
            out.unlink(missing_ok=True)
            return
        props = {
            "recording_url": conversations.recording_url(self.settings.public_url, item),
            "duration": round(duration, 2),
        }
        self._hook(cid, RECORDING_READY, "application", props)

    def _hook(self, cid: str, event_type: str, message_type: str, props: dict[str, Any]) -> None:
        """A webhook to the conversation's callback_url, recorded and sent beside the call."""
        if self.notify is not None:
            self._spawn(self.notify.conversation(self.pool, cid, event_type, message_type, props))

    async def close(self) -> None:
        """The API is stopping: every call ends, and every record write finishes."""
        for cid in list(self._calls):
            with contextlib.suppress(Exception):
                await self.end(cid, SERVER_SHUTDOWN)
        for task in [*self._waiting.values(), *self._leaving.values()]:
            task.cancel()
        # An `end` already under way (the /end route, a timer) holds a call no longer listed:
        # its webhooks and last records are written before the pool closes.
        ending = [t for t in self._ending if t is not asyncio.current_task()]
        if ending:
            await asyncio.wait(ending, timeout=30)
        while self._writes:  # a write's end may be followed by another's start
            await asyncio.gather(*list(self._writes), return_exceptions=True)


def _logged(task: asyncio.Task[Any], cid: str, what: str) -> asyncio.Task[Any]:
    """`task`, whose failure is logged (a call's side task must not die unseen)."""

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("conversation %s: %s failed", cid, what, exc_info=t.exception())

    task.add_done_callback(done)
    return task


async def _drain(call: Call) -> None:
    """Wait (at most DRAIN_S) until the data channel has handed its queued messages over."""
    channel = call.channel
    deadline = time.monotonic() + DRAIN_S
    while channel is not None and channel.readyState == "open" and time.monotonic() < deadline:
        if channel.bufferedAmount == 0:
            await asyncio.sleep(0.05)  # the last message leaves the SCTP queue
            return
        await asyncio.sleep(0.02)
