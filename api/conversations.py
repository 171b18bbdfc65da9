"""`/v2/conversations`: the records of live calls (Tavus v2 field names, so a Tavus client
switches by base URL). See doppel.domain.conversations.

Records only here; the call itself (`/offer`, `/interactions`) joins the live session to these
records elsewhere in `api/`.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import SHARE_OPT
from api.paging import Limit, Page
from api.state import Services
from api.videos import serve_mp4
from doppel.domain import conversations, sharing
from doppel.domain.conversations import ConversationRow
from doppel.domain.tenants import Tenant
from doppel.errors import InvalidRequest
from doppel.platform import urls


class ConversationCreated(msgspec.Struct):
    conversation_id: str
    conversation_name: str
    #: The call page, opened without the API key (its `t` token is the permission).
    conversation_url: str
    status: str
    callback_url: str | None
    replica_id: str
    persona_id: str
    created_at: dt.datetime


class ConversationOut(msgspec.Struct, omit_defaults=True):
    conversation_id: str
    conversation_name: str
    conversation_url: str
    status: str
    callback_url: str | None
    replica_id: str
    persona_id: str
    conversational_context: str
    custom_greeting: str
    audio_only: bool
    test_mode: bool
    #: max_call_duration, participant_left_timeout, participant_absent_timeout, language.
    properties: dict[str, Any]
    #: Why it ended (Tavus's words, e.g. `end_conversation_endpoint_hit`); None while active.
    shutdown_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    #: The call's MP4 (with `properties.enable_recording`, once the call has ended and it is
    #: written): a link that opens without the key, like a video's download link.
    recording_url: str | None
    #: With `?verbose=true` only: the interaction events, per-turn stage timings (seconds from
    #: the end of the person's speech: `first_audio_s` is when they heard the reply) and the
    #: transcript (`{role: user|replica, content, at}`: what was heard, and what was played,
    #: an interrupted reply cut at its last word played), in order.
    events: list[dict[str, Any]] | None = None
    turns: list[dict[str, Any]] | None = None
    transcript: list[dict[str, Any]] | None = None


class Offer(msgspec.Struct, forbid_unknown_fields=True):
    sdp: str
    type: str
    #: The connection being replaced (with `restart_pc`); informational here.
    pc_id: str | None = None
    #: Replace the conversation's current connection (a reconnecting client).
    restart_pc: bool = False


class Interaction(msgspec.Struct):
    """An inbound interaction in Tavus's envelope (`message_type`, `conversation_id` optional)."""

    event_type: str
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    message_type: str = "conversation"
    conversation_id: str | None = None


class Answer(msgspec.Struct):
    sdp: str
    type: str
    pc_id: str


class ConversationList(msgspec.Struct):
    data: list[ConversationOut]
    total_count: int
    page: int
    limit: int


def _url(item: ConversationRow, request: Request[Any, Any, Any]) -> str:
    return conversations.call_url(str(request.base_url), item.conversation_id, item.join_token)


def _out(item: ConversationRow, request: Request[Any, Any, Any]) -> ConversationOut:
    return ConversationOut(
        conversation_id=item.conversation_id,
        conversation_name=item.conversation_name,
        conversation_url=_url(item, request),
        status=item.status,
        callback_url=item.callback_url,
        replica_id=item.replica_id,
        persona_id=item.persona_id,
        conversational_context=item.conversational_context,
        custom_greeting=item.custom_greeting,
        audio_only=item.audio_only,
        test_mode=item.test_mode,
        properties=item.properties,
        shutdown_reason=item.shutdown_reason,
        created_at=item.created_at,
        updated_at=item.updated_at,
        ended_at=item.ended_at,
        recording_url=conversations.recording_url(str(request.base_url), item),
        events=item.events,
        turns=item.turns,
        transcript=None if item.transcript is None else [_line(t) for t in item.transcript],
    )


def _line(entry: dict[str, Any]) -> dict[str, Any]:
    """A transcript entry as the API shows it: the replica's role by its name (the webhook
    keeps the OpenAI roles Tavus sends).
    """
    role = "replica" if entry.get("role") == "assistant" else entry.get("role")
    return {**entry, "role": role}


class CallInfo(msgspec.Struct):
    """What the call page needs before it asks for the microphone."""

    conversation_id: str
    conversation_name: str
    status: str
    shutdown_reason: str | None
    audio_only: bool
    replica_id: str
    #: Someone is in the call now (a second person is refused: calls are one to one).
    connected: bool


async def _opened(
    request: Request[Tenant | None, Any, Any], services: Services, conversation_id: str
) -> ConversationRow:
    """The conversation for its tenant's key, or for the call page's `?t=` token."""
    if request.user is None:
        token = request.query_params.get(sharing.TOKEN_PARAM, "")
        return await conversations.by_token(services.pool, conversation_id, token)
    return await conversations.get(services.pool, request.user.id, conversation_id)


class ConversationController(Controller):
    path = "/conversations"
    tags = ["conversations"]

    @post(
        "/",
        operation_id="create_conversation",
        summary="A conversation: a live call with a replica speaking for a persona",
        description="JSON `{persona_id, replica_id?, conversation_name?, "
        "conversational_context?, custom_greeting?, callback_url?, audio_only?, test_mode?, "
        "properties?: {max_call_duration: 3600, participant_left_timeout: 0, "
        'participant_absent_timeout: 300, language: "english"}}`. The replica defaults to the '
        "persona's `default_replica_id` and must be completed. `test_mode` creates it ended. "
        "A field or property Doppel does not run is a 422 naming it. When the server already "
        "holds as many live calls as it serves in real time: 503 with Retry-After.",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        data: JSONBody[dict[str, Any]],
    ) -> ConversationCreated:
        check_url = functools.partial(
            urls.check_url,
            allow_private=services.settings.allow_private_urls,
            field="callback_url",
        )
        if not (isinstance(data, dict) and data.get("test_mode") is True):
            services.calls.check_capacity()
        item = await conversations.create(services.pool, request.user.id, data, check_url)
        services.calls.expect(item)
        return ConversationCreated(
            conversation_id=item.conversation_id,
            conversation_name=item.conversation_name,
            conversation_url=_url(item, request),
            status=item.status,
            callback_url=item.callback_url,
            replica_id=item.replica_id,
            persona_id=item.persona_id,
            created_at=item.created_at,
        )

    @get(
        "/",
        operation_id="list_conversations",
        summary="This tenant's conversations, newest first",
    )
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
        status: Annotated[
            str | None, QueryParameter(description="`active` or `ended` only")
        ] = None,
    ) -> ConversationList:
        items, total = await conversations.list_page(
            services.pool, request.user.id, page, limit, status
        )
        return ConversationList([_out(i, request) for i in items], total, page, limit)

    @get("/{conversation_id:str}", operation_id="get_conversation", summary="One conversation")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
        verbose: Annotated[
            bool, QueryParameter(description="also its events, turn timings and transcript")
        ] = False,
    ) -> ConversationOut:
        item = await conversations.get(
            services.pool, request.user.id, conversation_id, verbose=verbose
        )
        return _out(item, request)

    @post(
        "/{conversation_id:str}/end",
        operation_id="end_conversation",
        summary="End a conversation (an ended one is left as it is)",
        status_code=200,
    )
    async def end(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
    ) -> ConversationOut:
        await conversations.get(services.pool, request.user.id, conversation_id)
        await services.calls.end(conversation_id, conversations.ENDPOINT_HIT)
        item = await conversations.get(services.pool, request.user.id, conversation_id)
        return _out(item, request)

    @delete(
        "/{conversation_id:str}",
        operation_id="delete_conversation",
        summary="Delete a conversation (`hard=true` also removes its record for good)",
        status_code=200,
    )
    async def remove(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
        hard: Annotated[
            bool, QueryParameter(description="remove the record, its transcript and events")
        ] = False,
    ) -> Response[dict[str, str]]:
        await conversations.get(services.pool, request.user.id, conversation_id)
        if conversation_id in services.calls:
            await services.calls.end(conversation_id, conversations.DELETED)
        await conversations.delete(services.pool, request.user.id, conversation_id, hard)
        return Response({"conversation_id": conversation_id, "status": "deleted"}, status_code=200)

    @get(
        "/{conversation_id:str}/join",
        operation_id="conversation_join_info",
        summary="What the call page shows before joining (API key or the call link's `?t=`)",
        opt={SHARE_OPT: True},
    )
    async def join(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
    ) -> CallInfo:
        item = await _opened(request, services, conversation_id)
        return CallInfo(
            conversation_id=item.conversation_id,
            conversation_name=item.conversation_name,
            status=item.status,
            shutdown_reason=item.shutdown_reason,
            audio_only=item.audio_only,
            replica_id=item.replica_id,
            connected=services.calls.connected(item.conversation_id),
        )

    @get(
        "/{conversation_id:str}/recording",
        operation_id="conversation_recording",
        summary="The call's recording, an MP4 (API key or the `recording_url`'s `?t=` token)",
        description="H.264 + AAC: the replica's video as streamed and both voices. 404 when "
        "the conversation was not recorded, 409 until the call has ended and it is written.",
        opt={SHARE_OPT: True},
    )
    async def recording(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
    ) -> Response[Any]:
        tenant = None if request.user is None else request.user.id
        token = request.query_params.get(sharing.TOKEN_PARAM, "")
        path = await conversations.recording(services.pool, tenant, conversation_id, token)
        return serve_mp4(request, path, attachment=False)

    @post(
        "/{conversation_id:str}/offer",
        operation_id="offer_conversation",
        summary="Join the call: the client's WebRTC offer in, the replica's answer out",
        description='JSON `{sdp, type: "offer", pc_id?, restart_pc?}` (non-trickle: the offer '
        "holds the client's candidates, the answer holds ours). The client sends its microphone "
        "and receives the replica's audio and video plus an `events` data channel it opens. "
        "The API key or the call link's `?t=` token. An ended conversation is a 409, and so is "
        "a second person while someone is in the call (calls are one to one); a malformed "
        "offer a 422 naming what is wrong.",
        status_code=200,
        opt={SHARE_OPT: True},
    )
    async def offer(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
        data: JSONBody[Offer],
    ) -> Answer:
        item = await _opened(request, services, conversation_id)
        sdp, kind, pc_id = await services.calls.connect(
            item, data.sdp, data.type, restart=data.restart_pc
        )
        return Answer(sdp=sdp, type=kind, pc_id=pc_id)

    @post(
        "/{conversation_id:str}/interactions",
        operation_id="interact_conversation",
        summary="Send an interaction to a call in progress, from a server not in the call",
        description="The data channel's inbound messages, posted: `{event_type, properties}` "
        "with `conversation.echo` `{text}`, `conversation.respond` `{text}`, "
        "`conversation.interrupt`, `conversation.append_llm_context` / "
        "`conversation.overwrite_llm_context` `{context}`, `conversation.sensitivity` "
        "`{participant_pause_sensitivity?, participant_interrupt_sensitivity?}` (low, medium, "
        "high). 409 when nobody is connected to the conversation; 404 for an unknown "
        "`event_type` or missing properties.",
        status_code=200,
    )
    async def interact(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
        data: JSONBody[Interaction],
    ) -> dict[str, str]:
        await conversations.get(services.pool, request.user.id, conversation_id)
        if data.conversation_id not in (None, conversation_id):
            raise InvalidRequest(
                f"`conversation_id` {data.conversation_id!r} is not this conversation "
                f"({conversation_id}): leave it out or send the same id."
            )
        message = {"event_type": data.event_type, "properties": data.properties}
        await services.calls.interact(conversation_id, message)
        return {"conversation_id": conversation_id, "event_type": data.event_type, "status": "sent"}
