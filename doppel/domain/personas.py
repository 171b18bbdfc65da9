"""Personas (Tavus `/v2/personas`): what a replica is told and which LLM answers for it in a
conversation.

A persona is a system prompt, a context, an optional default replica and its layers. Doppel
reads two layers: `llm`, any OpenAI-compatible chat endpoint (`model`, `base_url`, `api_key`),
the `tools` (OpenAI function definitions) the model may call and, a Doppel addition, the
`timezone` its built-in `get_current_time` answers in; and `stt`'s turn-taking settings
(`participant_pause_sensitivity`, `participant_interrupt_sensitivity`: low, medium or high). A
layer or field Doppel does not run (Tavus's `perception`, `tts`, `conversational_flow`, the
`stt` engine) is refused by name rather than stored and silently ignored.

The LLM's API key is stored apart from the layers and never read back: a persona answers with
the key masked to its last four characters. Edits are JSON Patch (RFC 6902) operations on the
persona's document, as Tavus takes them; the patched document is checked as a new one would be,
so an edit can never leave a persona that could not have been created.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
import secrets
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from doppel.domain import json_patch, replicas
from doppel.errors import InvalidRequest, NotFound
from doppel.platform import db

MAX_NAME = 200
#: System prompt and context together. A 32k-token model holds about 120,000 characters; the
#: rest is the conversation itself.
MAX_PROMPT_CHARS = 60_000
MAX_TOOLS = 32
#: OpenAI's rule for function names.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MODEL = 200
#: The pipeline Doppel runs: speech in, speech and face out.
PIPELINE_MODES = ("full",)
LLM_FIELDS = ("model", "base_url", "api_key", "tools", "timezone")
STT_FIELDS = ("participant_pause_sensitivity", "participant_interrupt_sensitivity")
SENSITIVITIES = ("low", "medium", "high")
#: Fields of the document a JSON Patch may change (the rest is the server's).
EDITABLE = (
    "persona_name",
    "system_prompt",
    "context",
    "pipeline_mode",
    "default_replica_id",
    "layers",
)

#: Checks a `base_url` (doppel.platform.urls.check_url with the operator's private-address rule).
UrlCheck = Callable[[str], Awaitable[str]]


@dataclasses.dataclass(frozen=True)
class PersonaRow:
    persona_id: str
    tenant_id: uuid.UUID
    persona_name: str
    system_prompt: str
    context: str
    pipeline_mode: str
    default_replica_id: str | None
    #: Checked layers without `llm.api_key`.
    layers: dict[str, Any]
    llm_api_key: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def document(self, *, with_key: bool = False) -> dict[str, Any]:
        """The editable fields as one JSON document (what a JSON Patch applies to); the API
        key is in `layers.llm.api_key` only with `with_key` (the server's own copy).
        """
        layers = copy.deepcopy(self.layers)
        if with_key and self.llm_api_key is not None:
            layers.setdefault("llm", {})["api_key"] = self.llm_api_key
        return {
            "persona_name": self.persona_name,
            "system_prompt": self.system_prompt,
            "context": self.context,
            "pipeline_mode": self.pipeline_mode,
            "default_replica_id": self.default_replica_id,
            "layers": layers,
        }


def masked(key: str | None) -> str | None:
    """An API key as a person may see it again: its last four characters."""
    if key is None:
        return None
    return "..." + key[-4:] if len(key) > 8 else "..."


def _from_row(row: asyncpg.Record) -> PersonaRow:
    layers = row["layers"]
    return PersonaRow(
        persona_id=row["persona_id"],
        tenant_id=row["tenant_id"],
        persona_name=row["persona_name"],
        system_prompt=row["system_prompt"],
        context=row["context"],
        pipeline_mode=row["pipeline_mode"],
        default_replica_id=row["default_replica_id"],
        layers=json.loads(layers) if isinstance(layers, str) else dict(layers),
        llm_api_key=row["llm_api_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def new_id() -> str:
    return "p" + secrets.token_hex(6)


# --- checks --------------------------------------------------------------------------------------


def _text(value: object, field: str, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidRequest(f"`{field}` must be text.")
    value = value.strip()
    if required and not value:
        raise InvalidRequest(
            f"`{field}` is empty: write the instructions the replica follows in a conversation."
        )
    return value


def check_tools(tools: object) -> list[dict[str, Any]]:
    """OpenAI function definitions: `[{"type": "function", "function": {"name", "description"?,
    "parameters"?}}]`, names unique; the first problem is named with the tool's place.
    """
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("`layers.llm.tools` must be a list of function definitions.")
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"`layers.llm.tools` has {len(tools)} tools; at most {MAX_TOOLS}.")
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        where = f"`layers.llm.tools[{i}]`"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidRequest(f'{where} must be {{"type": "function", "function": {{...}}}}.')
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequest(f"{where} has no `function` object.")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise InvalidRequest(
                f"{where}: the function name {name!r} must be 1-64 letters, digits, _ or -."
            )
        if name in seen:
            raise InvalidRequest(f"{where}: the function name {name!r} is used twice.")
        seen.add(name)
        description = fn.get("description", "")
        if not isinstance(description, str):
            raise InvalidRequest(f"{where}: `description` must be text.")
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise InvalidRequest(
                f'{where}: `parameters` must be a JSON Schema object ({{"type": "object", '
                '"properties": {...}}).'
            )
        unknown = set(fn) - {"name", "description", "parameters", "strict"}
        if unknown:
            raise InvalidRequest(f"{where}: unknown field(s) {sorted(unknown)} in `function`.")
        out.append(
            {
                "type": "function",
                "function": {"name": name, "description": description, "parameters": parameters},
            }
        )
    return out


async def check_layers(layers: object, check_url: UrlCheck) -> tuple[dict[str, Any], str | None]:
    """(the layers to store, the LLM's API key or None). Unknown layers and fields are refused
    by name: a setting Doppel would ignore is a setting the person thinks is in effect.
    """
    if layers is None:
        return {}, None
    if not isinstance(layers, dict):
        raise InvalidRequest('`layers` must be an object, such as {"llm": {...}}.')
    other = sorted(set(layers) - {"llm", "stt"})
    if other:
        raise InvalidRequest(
            f"Doppel does not run the layer(s) {other}: a persona takes `layers.llm` "
            "(model, base_url, api_key, tools, timezone) and `layers.stt` (its turn-taking "
            "sensitivities) only. Remove the others."
        )
    stt = check_stt(layers.get("stt"))
    llm_layers, key = await _check_llm(layers.get("llm"), check_url)
    return {**llm_layers, **({"stt": stt} if stt else {})}, key


def check_stt(stt: object) -> dict[str, str]:
    """`layers.stt`: the person's turn-taking sensitivities, each low, medium or high."""
    if stt is None:
        return {}
    if not isinstance(stt, dict):
        raise InvalidRequest(
            '`layers.stt` must be an object, such as {"participant_pause_sensitivity": "high"}.'
        )
    unknown = sorted(set(stt) - set(STT_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"`layers.stt` has field(s) Doppel does not run: {unknown}; it takes "
            f"{list(STT_FIELDS)} (Doppel's speech-to-text is its own Whisper)."
        )
    for name, value in stt.items():
        if value not in SENSITIVITIES:
            raise InvalidRequest(
                f"`layers.stt.{name}` must be one of {list(SENSITIVITIES)}; got {value!r}."
            )
    return dict(stt)


def check_timezone(name: object) -> str:
    """An IANA time zone name, or a 422 saying what is accepted."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(
            '`layers.llm.timezone` must be an IANA time zone such as "Europe/Paris".'
        )
    try:
        zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"`layers.llm.timezone` {name!r} is not a known time zone: use an IANA name such "
            'as "Europe/Paris" or "America/New_York".'
        ) from None
    return name.strip()


async def _check_llm(llm: object, check_url: UrlCheck) -> tuple[dict[str, Any], str | None]:
    if llm is None:
        return {}, None
    if not isinstance(llm, dict):
        raise InvalidRequest("`layers.llm` must be an object: {model, base_url, api_key, tools}.")
    unknown = sorted(set(llm) - set(LLM_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"`layers.llm` has unknown field(s) {unknown}; it takes {list(LLM_FIELDS)}."
        )
    out: dict[str, Any] = {}
    model = _text(llm.get("model"), "layers.llm.model")
    if len(model) > MAX_MODEL:
        raise InvalidRequest(f"`layers.llm.model` is {len(model)} characters; at most {MAX_MODEL}.")
    if model:
        out["model"] = model
    base_url = llm.get("base_url")
    if base_url is not None:
        if not isinstance(base_url, str):
            raise InvalidRequest("`layers.llm.base_url` must be text (an http(s) URL).")
        out["base_url"] = await check_url(base_url)
        if not model:
            raise InvalidRequest(
                "`layers.llm.base_url` is set but `layers.llm.model` is not: name the model "
                "that endpoint serves."
            )
    key = llm.get("api_key")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise InvalidRequest("`layers.llm.api_key` must be non-empty text (or left out).")
    tools = check_tools(llm.get("tools"))
    if tools:
        out["tools"] = tools
    if llm.get("timezone") is not None:
        out["timezone"] = check_timezone(llm["timezone"])
    return ({"llm": out} if out else {}), (key.strip() if isinstance(key, str) else None)


@dataclasses.dataclass(frozen=True)
class Checked:
    persona_name: str
    system_prompt: str
    context: str
    pipeline_mode: str
    default_replica_id: str | None
    layers: dict[str, Any]
    llm_api_key: str | None

    def columns(self) -> tuple[object, ...]:
        """The values of the personas table's columns persona_name .. llm_api_key, in order."""
        return (
            self.persona_name,
            self.system_prompt,
            self.context,
            self.pipeline_mode,
            self.default_replica_id,
            json.dumps(self.layers),
            self.llm_api_key,
        )


async def check_document(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    doc: Mapping[str, Any],
    check_url: UrlCheck,
    fallback_name: str,
) -> Checked:
    """A persona document (a new one, or an edited one) as it will be stored."""
    unknown = sorted(set(doc) - set(EDITABLE))
    if unknown:
        raise InvalidRequest(
            f"Unknown persona field(s) {unknown}; a persona takes {list(EDITABLE)}."
        )
    name = re.sub(r"\s+", " ", _text(doc.get("persona_name"), "persona_name"))
    if len(name) > MAX_NAME:
        raise InvalidRequest(f"`persona_name` is {len(name)} characters long; at most {MAX_NAME}.")
    prompt = _text(doc.get("system_prompt"), "system_prompt", required=True)
    context = _text(doc.get("context"), "context")
    if len(prompt) + len(context) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"`system_prompt` and `context` hold {len(prompt) + len(context)} characters "
            f"together; at most {MAX_PROMPT_CHARS} (the conversation needs the rest of the "
            "model's context window)."
        )
    mode = _text(doc.get("pipeline_mode"), "pipeline_mode") or "full"
    if mode not in PIPELINE_MODES:
        raise InvalidRequest(
            f"`pipeline_mode` {mode!r} is not one Doppel runs; use {list(PIPELINE_MODES)}."
        )
    replica_id = doc.get("default_replica_id")
    if replica_id is not None:
        if not isinstance(replica_id, str) or not replica_id.strip():
            raise InvalidRequest("`default_replica_id` must be a replica id (or left out).")
        replica_id = replica_id.strip()
        await replicas.get(pool, tenant_id, replica_id)  # 404 for an unknown or foreign one
    layers, key = await check_layers(doc.get("layers"), check_url)
    return Checked(name or fallback_name, prompt, context, mode, replica_id, layers, key)


# --- storage -------------------------------------------------------------------------------------


async def create(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, doc: Mapping[str, Any], check_url: UrlCheck
) -> PersonaRow:
    pid = new_id()
    c = await check_document(pool, tenant_id, doc, check_url, f"persona {pid}")
    row = await pool.fetchrow(
        """INSERT INTO personas (persona_id, tenant_id, persona_name, system_prompt, context,
               pipeline_mode, default_replica_id, layers, llm_api_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) RETURNING *""",
        pid,
        tenant_id,
        *c.columns(),
    )
    return _from_row(row)


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, persona_id: str) -> PersonaRow:
    row = await pool.fetchrow(
        """SELECT * FROM personas
           WHERE persona_id = $1 AND tenant_id = $2 AND deleted_at IS NULL""",
        persona_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No persona {persona_id} exists for this API key.")
    return _from_row(row)


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int
) -> tuple[list[PersonaRow], int]:
    rows, total = await db.fetch_page(
        pool,
        "SELECT * FROM personas WHERE tenant_id = $1 AND deleted_at IS NULL",
        "created_at DESC, persona_id",
        [tenant_id],
        page,
        limit,
    )
    return [_from_row(r) for r in rows], total


async def patch(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    persona_id: str,
    ops: object,
    check_url: UrlCheck,
) -> PersonaRow:
    """Apply JSON Patch `ops`; the result is checked as a new persona would be. Two edits at
    once: the row is locked, so the second applies to the first's result.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT * FROM personas
               WHERE persona_id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE""",
            persona_id,
            tenant_id,
        )
        if row is None:
            raise NotFound(f"No persona {persona_id} exists for this API key.")
        current = _from_row(row)
        doc = json_patch.apply(current.document(with_key=True), ops, EDITABLE)
        c = await check_document(pool, tenant_id, doc, check_url, current.persona_name)
        updated = await conn.fetchrow(
            """UPDATE personas SET persona_name = $2, system_prompt = $3, context = $4,
                   pipeline_mode = $5, default_replica_id = $6, layers = $7::jsonb,
                   llm_api_key = $8, updated_at = now()
               WHERE persona_id = $1 RETURNING *""",
            persona_id,
            *c.columns(),
        )
    return _from_row(updated)


async def delete(pool: asyncpg.Pool, tenant_id: uuid.UUID, persona_id: str) -> None:
    """Hide the persona and forget its LLM key."""
    await get(pool, tenant_id, persona_id)
    await pool.execute(
        """UPDATE personas SET deleted_at = now(), updated_at = now(), llm_api_key = NULL
           WHERE persona_id = $1""",
        persona_id,
    )
