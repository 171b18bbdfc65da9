"""Conversations (Tavus `/v2/conversations`): the record of a live call between a person and a
replica that speaks for a persona.

Records only: the call itself (WebRTC, turns, the face and voice) is the live session's, in
the engine; it reads a conversation through `by_token` and writes back through `record_event`,
`record_turn`, `append_transcript` and `set_ended`. Records and engine meet in `api/`.

A request is checked as personas are: a field or property Doppel does not run is refused by name
(a 422) rather than stored and silently ignored, since a setting Doppel would ignore is a
setting the person thinks is in effect. Tavus's recording, captions and green-screen switches
are accepted when false, since that is what happens anyway. The replica comes from the request
or from the persona's `default_replica_id`, and must be this tenant's and trained.

A conversation ends once: `status` goes from 'active' to 'ended' with a `shutdown_reason` in
Tavus's words, and whoever ends it second (the API's `/end`, a timeout in the live session)
changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from doppel.domain import personas, replicas, sharing
from doppel.errors import Conflict, InvalidRequest, NotFound
from doppel.platform import db

STATUSES = ("active", "ended")
#: What `POST /v2/conversations` takes (Tavus's names).
FIELDS = (
    "replica_id",
    "persona_id",
    "conversation_name",
    "conversational_context",
    "custom_greeting",
    "callback_url",
    "audio_only",
    "test_mode",
    "properties",
)
#: Every property Doppel runs, with its default (seconds; a Whisper language code).
PROPERTY_DEFAULTS: dict[str, Any] = {
    "max_call_duration": 3600,
    "participant_left_timeout": 0,
    "participant_absent_timeout": 300,
    "language": "en",
}
#: Inclusive bounds of the timing properties, in seconds.
PROPERTY_BOUNDS = {
    "max_call_duration": (1, 4 * 3600),
    "participant_left_timeout": (0, 3600),
    "participant_absent_timeout": (1, 3600),
}
#: Switches Doppel runs, with their default (Tavus's names).
SWITCH_DEFAULTS: dict[str, bool] = {"enable_recording": False}
#: Tavus switches Doppel does not do: accepted when false, refused when true.
UNSUPPORTED_SWITCHES = ("enable_closed_captions", "apply_greenscreen")
#: The cloned voices speak English only; Tavus writes the language's name, Whisper its code.
LANGUAGES = {"english": "en", "en": "en"}
MAX_NAME = 200
MAX_GREETING = 1000
#: `shutdown_reason`s set here (the live session sets the timeouts', Tavus's words too).
ENDPOINT_HIT = "end_conversation_endpoint_hit"
TEST_MODE = "test_mode"
DELETED = "conversation_deleted"
#: Roles of a transcript entry (the `application.transcription_ready` webhook's).
ROLES = ("system", "user", "assistant")
#: The columns a summary reads: all but the logs the live session appends.
_SUMMARY = """conversation_id, tenant_id, replica_id, persona_id, conversation_name,
    conversational_context, custom_greeting, callback_url, audio_only, test_mode, properties,
    status, shutdown_reason, join_token, created_at, updated_at, ended_at, recording_path,
    recording_duration_s, recording_token"""


@dataclasses.dataclass(frozen=True)
class ConversationRow:
    conversation_id: str
    tenant_id: uuid.UUID
    replica_id: str
    persona_id: str
    conversation_name: str
    conversational_context: str
    custom_greeting: str
    callback_url: str | None
    audio_only: bool
    test_mode: bool
    #: Every key of PROPERTY_DEFAULTS.
    properties: dict[str, Any]
    status: str
    shutdown_reason: str | None
    join_token: str
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    #: The call's MP4 once written (`properties.enable_recording`), its length, and the
    #: token its link opens with.
    recording_path: Path | None = None
    recording_duration_s: float | None = None
    recording_token: str = ""
    #: The live session's logs, read only by a verbose read (None otherwise).
    events: list[dict[str, Any]] | None = None
    turns: list[dict[str, Any]] | None = None
    transcript: list[dict[str, Any]] | None = None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _from_row(row: asyncpg.Record) -> ConversationRow:
    logs = {k: _json(row[k]) if k in row else None for k in ("events", "turns", "transcript")}
    return ConversationRow(
        conversation_id=row["conversation_id"],
        tenant_id=row["tenant_id"],
        replica_id=row["replica_id"],
        persona_id=row["persona_id"],
        conversation_name=row["conversation_name"],
        conversational_context=row["conversational_context"],
        custom_greeting=row["custom_greeting"],
        callback_url=row["callback_url"],
        audio_only=row["audio_only"],
        test_mode=row["test_mode"],
        properties=dict(_json(row["properties"])),
        status=row["status"],
        shutdown_reason=row["shutdown_reason"],
        join_token=row["join_token"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
        recording_path=Path(row["recording_path"]) if row["recording_path"] else None,
        recording_duration_s=row["recording_duration_s"],
        recording_token=row["recording_token"],
        **logs,
    )


def new_id() -> str:
    return "c" + secrets.token_hex(6)


def call_url(base_url: str, conversation_id: str, token: str) -> str:
    """`conversation_url`: the call page, opened without the API key (its token is the
    permission, as a video's share link).
    """
    t = f"?{sharing.TOKEN_PARAM}={quote(token, safe='')}"
    return f"{base_url.rstrip('/')}/conversations/{conversation_id}{t}"


# --- checks --------------------------------------------------------------------------------------


def _text(doc: Mapping[str, Any], field: str, limit: int | None = None) -> str:
    value = doc.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"`{field}` must be text.")
    value = value.strip()
    if limit is not None and len(value) > limit:
        raise InvalidRequest(f"`{field}` is {len(value)} characters long; at most {limit}.")
    return value


def _switch(doc: Mapping[str, Any], field: str) -> bool:
    value = doc.get(field, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"`{field}` must be true or false.")
    return value


def check_properties(given: object) -> dict[str, Any]:
    """The call's properties with every default filled in; the first problem named by its
    field (`properties.x`).
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest('`properties` must be an object, such as {"max_call_duration": 600}.')
    runs = [*PROPERTY_DEFAULTS, *SWITCH_DEFAULTS]
    unknown = sorted(set(given) - set(runs) - set(UNSUPPORTED_SWITCHES))
    if unknown:
        raise InvalidRequest(
            f"Unknown or unsupported `properties` field(s) {unknown}; Doppel runs {runs}. "
            "Remove the others."
        )
    for name in UNSUPPORTED_SWITCHES:
        if name in given and given[name] is not False:
            raise InvalidRequest(
                f"`properties.{name}` is not supported by Doppel: leave it out (or false)."
            )
    out = dict(PROPERTY_DEFAULTS)
    for name, (low, high) in PROPERTY_BOUNDS.items():
        value = given.get(name, out[name])
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidRequest(
                f"`properties.{name}` must be a whole number of seconds from {low} to {high}; "
                f"got {value!r}."
            )
        out[name] = value
    language = given.get("language", "en")
    code = LANGUAGES.get(language.strip().lower()) if isinstance(language, str) else None
    if code is None:
        raise InvalidRequest(
            f"`properties.language` {language!r} is not one Doppel speaks: the cloned voices "
            'speak English ("english" or "en").'
        )
    out["language"] = code
    for name, default in SWITCH_DEFAULTS.items():
        value = given.get(name, default)
        if not isinstance(value, bool):
            raise InvalidRequest(f"`properties.{name}` must be true or false; got {value!r}.")
        out[name] = value
    return out


@dataclasses.dataclass(frozen=True)
class Checked:
    """A create request's fields as they will be stored (lookups not done yet)."""

    persona_id: str
    replica_id: str | None
    conversation_name: str
    conversational_context: str
    custom_greeting: str
    callback_url: str | None
    audio_only: bool
    test_mode: bool
    properties: dict[str, Any]


def check_request(doc: Mapping[str, Any]) -> Checked:
    """What can be judged without the database, each problem named by its field."""
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            f"Unknown conversation field(s) {unknown}; a conversation takes {list(FIELDS)}."
        )
    persona_id = _text(doc, "persona_id")
    if not persona_id:
        raise InvalidRequest(
            "`persona_id` is required: the persona gives the replica its instructions and LLM."
        )
    callback = _text(doc, "callback_url")
    return Checked(
        persona_id=persona_id,
        replica_id=_text(doc, "replica_id") or None,
        conversation_name=re.sub(r"\s+", " ", _text(doc, "conversation_name", MAX_NAME)),
        conversational_context=_text(doc, "conversational_context"),
        custom_greeting=_text(doc, "custom_greeting", MAX_GREETING),
        callback_url=callback or None,
        audio_only=_switch(doc, "audio_only"),
        test_mode=_switch(doc, "test_mode"),
        properties=check_properties(doc.get("properties")),
    )


async def speaker(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, given: str | None, persona: personas.PersonaRow
) -> str:
    """The replica that takes the call: `given`, or the persona's default; `NotFound` for an
    unknown or another tenant's, `Conflict` for one not trained.
    """
    replica_id = given or persona.default_replica_id
    if replica_id is None:
        raise InvalidRequest(
            f"`replica_id` is required: persona {persona.persona_id} has no `default_replica_id`."
        )
    rep = await replicas.get(pool, tenant_id, replica_id)
    if rep.status != "completed":
        state = "still training" if rep.status == "started" else "failed to train"
        where = "" if given else f" (persona {persona.persona_id}'s `default_replica_id`)"
        raise Conflict(
            f"Replica {replica_id}{where} is {state} (status {rep.status!r}); a conversation "
            "needs a completed replica."
        )
    return replica_id


# --- storage -------------------------------------------------------------------------------------


async def create(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, doc: Mapping[str, Any], check_url: personas.UrlCheck
) -> ConversationRow:
    """A new conversation, 'active' (or 'ended' at once with `test_mode`: nobody joins)."""
    c = check_request(doc)
    persona = await personas.get(pool, tenant_id, c.persona_id)
    replica_id = await speaker(pool, tenant_id, c.replica_id, persona)
    prompt = len(persona.system_prompt) + len(persona.context) + len(c.conversational_context)
    if prompt > personas.MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"`conversational_context` with persona {persona.persona_id}'s prompt and context "
            f"holds {prompt} characters; at most {personas.MAX_PROMPT_CHARS}."
        )
    callback = await check_url(c.callback_url) if c.callback_url else None
    cid = new_id()
    row = await pool.fetchrow(
        f"""INSERT INTO conversations (conversation_id, tenant_id, replica_id, persona_id,
               conversation_name, conversational_context, custom_greeting, callback_url,
               audio_only, test_mode, properties, status, shutdown_reason, ended_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb,
                   CASE WHEN $10 THEN 'ended' ELSE 'active' END,
                   CASE WHEN $10 THEN '{TEST_MODE}' END,
                   CASE WHEN $10 THEN now() END)
           RETURNING {_SUMMARY}""",
        cid,
        tenant_id,
        replica_id,
        persona.persona_id,
        c.conversation_name or f"conversation {cid}",
        c.conversational_context,
        c.custom_greeting,
        callback,
        c.audio_only,
        c.test_mode,
        json.dumps(c.properties),
    )
    return _from_row(row)


async def get(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, conversation_id: str, *, verbose: bool = False
) -> ConversationRow:
    """The tenant's conversation; `verbose` also reads its events, turns and transcript."""
    row = await pool.fetchrow(
        f"""SELECT {"*" if verbose else _SUMMARY} FROM conversations
            WHERE conversation_id = $1 AND tenant_id = $2 AND deleted_at IS NULL""",
        conversation_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No conversation {conversation_id} exists for this API key.")
    return _from_row(row)


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int, status: str | None = None
) -> tuple[list[ConversationRow], int]:
    """One page of the tenant's conversations (those with `status` only, when given), newest
    first, and how many there are in all.
    """
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"`status` {status!r} is not one of {list(STATUSES)}.")
    rows, total = await db.fetch_page(
        pool,
        f"""SELECT {_SUMMARY} FROM conversations WHERE tenant_id = $1 AND deleted_at IS NULL
            AND ($2::text IS NULL OR status = $2)""",
        "created_at DESC, conversation_id",
        [tenant_id, status],
        page,
        limit,
    )
    return [_from_row(r) for r in rows], total


async def set_ended(pool: asyncpg.Pool, conversation_id: str, reason: str) -> bool:
    """End the conversation with `reason` (Tavus's words, e.g. "max_call_duration reached");
    True when this call ended it, False when it had ended already (its first reason stays).
    """
    ended = await pool.fetchval(
        """UPDATE conversations SET status = 'ended', shutdown_reason = $2, ended_at = now(),
               updated_at = now()
           WHERE conversation_id = $1 AND status = 'active' RETURNING conversation_id""",
        conversation_id,
        reason,
    )
    return ended is not None


async def delete(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, conversation_id: str, hard: bool
) -> None:
    """Hide the conversation (ending it if active) or, with `hard`, remove its row and logs."""
    await get(pool, tenant_id, conversation_id)
    if hard:
        await pool.execute("DELETE FROM conversations WHERE conversation_id = $1", conversation_id)
        return
    await set_ended(pool, conversation_id, DELETED)
    await pool.execute(
        """UPDATE conversations SET deleted_at = now(), updated_at = now()
           WHERE conversation_id = $1""",
        conversation_id,
    )


# --- the live session's side ---------------------------------------------------------------------


async def by_token(pool: asyncpg.Pool, conversation_id: str, token: str) -> ConversationRow:
    """The conversation whose call page `token` opens; a wrong token answers like an unknown
    or deleted conversation, so a link cannot be used to learn which ids exist.
    """
    row = await pool.fetchrow(
        f"""SELECT {_SUMMARY} FROM conversations
            WHERE conversation_id = $1 AND deleted_at IS NULL""",
        conversation_id,
    )
    if row is None or not sharing.matches(row["join_token"], token):
        raise NotFound(f"No conversation {conversation_id} opens with this link.")
    return _from_row(row)


async def recorded(
    pool: asyncpg.Pool, conversation_id: str, path: Path, duration_s: float
) -> ConversationRow | None:
    """Keep the call's recording; None when the conversation is gone (the file is the
    caller's to remove then).
    """
    row = await pool.fetchrow(
        f"""UPDATE conversations SET recording_path = $2, recording_duration_s = $3,
               updated_at = now()
            WHERE conversation_id = $1 AND deleted_at IS NULL RETURNING {_SUMMARY}""",
        conversation_id,
        str(path),
        duration_s,
    )
    return None if row is None else _from_row(row)


async def recording(
    pool: asyncpg.Pool, tenant_id: uuid.UUID | None, conversation_id: str, token: str
) -> Path:
    """The call's recording for its tenant's key (`tenant_id`) or, without a key, for the
    recording link's `token`; NotFound otherwise, Conflict while there is none.
    """
    row = await pool.fetchrow(
        f"""SELECT {_SUMMARY} FROM conversations
            WHERE conversation_id = $1 AND deleted_at IS NULL""",
        conversation_id,
    )
    allowed = row is not None and (
        row["tenant_id"] == tenant_id
        if tenant_id is not None
        else sharing.matches(row["recording_token"], token)
    )
    if not allowed:
        raise NotFound(f"No recording of conversation {conversation_id} opens with this link.")
    item = _from_row(row)
    if item.recording_path is None or not item.recording_path.exists():
        if not item.properties.get("enable_recording"):
            raise NotFound(
                f"Conversation {conversation_id} was not recorded: create conversations with "
                '`properties: {"enable_recording": true}` to record them.'
            )
        raise Conflict(
            f"Conversation {conversation_id}'s recording is not ready: it is written when "
            "the call ends (the `application.recording_ready` webhook says when)."
        )
    return item.recording_path


def recording_url(base_url: str, item: ConversationRow) -> str | None:
    """The recording's link (opened without the key, by its own token); None without one."""
    if item.recording_path is None:
        return None
    t = f"?{sharing.TOKEN_PARAM}={quote(item.recording_token, safe='')}"
    return f"{base_url.rstrip('/')}/v2/conversations/{item.conversation_id}/recording{t}"


async def _append(pool: asyncpg.Pool, conversation_id: str, log: str, item: object) -> None:
    """Append `item` to the conversation's `log` column in one statement (appends from two
    tasks of a session cannot lose each other).
    """
    found = await pool.fetchval(
        f"""UPDATE conversations SET {log} = {log} || jsonb_build_array($2::jsonb),
               updated_at = now()
            WHERE conversation_id = $1 RETURNING conversation_id""",
        conversation_id,
        json.dumps(item),
    )
    if found is None:
        raise NotFound(f"No conversation {conversation_id} exists.")


async def record_event(pool: asyncpg.Pool, conversation_id: str, event: Mapping[str, Any]) -> None:
    """Keep one interaction event (the envelope sent on the data channel or to the webhook)."""
    if not isinstance(event.get("event_type"), str):
        raise ValueError(f"an event needs its `event_type`: {event!r}")
    await _append(pool, conversation_id, "events", dict(event))


async def record_turn(
    pool: asyncpg.Pool, conversation_id: str, timings: Mapping[str, float | int | None]
) -> None:
    """Keep one turn's stage times (e.g. seconds from the end of the person's speech to the
    transcript, the LLM's first text, the first audio, the first speaking frame).
    """
    await _append(pool, conversation_id, "turns", dict(timings))


async def transcript(pool: asyncpg.Pool, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's transcript (`{role, content, at}` each, in order); [] for none."""
    value = await pool.fetchval(
        "SELECT transcript FROM conversations WHERE conversation_id = $1", conversation_id
    )
    return list(_json(value) or []) if value is not None else []


async def append_transcript(
    pool: asyncpg.Pool, conversation_id: str, role: str, content: str, at: dt.datetime
) -> None:
    """Keep one utterance as `{role, content, at}` (`role` as OpenAI's: system, user,
    assistant; `content` the words actually heard or played).
    """
    if role not in ROLES:
        raise ValueError(f"a transcript role is one of {ROLES}, not {role!r}")
    entry = {"role": role, "content": content, "at": at.isoformat()}
    await _append(pool, conversation_id, "transcript", entry)
