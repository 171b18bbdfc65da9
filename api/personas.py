"""`/v2/personas`: a system prompt, context, default replica and LLM layer (Tavus v2 field
names); edits are JSON Patch, as Tavus takes them. See doppel.domain.personas.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.paging import Limit, Page
from api.state import Services
from doppel.domain import personas
from doppel.domain.tenants import Tenant
from doppel.platform import urls


class PersonaOut(msgspec.Struct):
    persona_id: str
    persona_name: str
    system_prompt: str
    context: str
    pipeline_mode: str
    default_replica_id: str | None
    #: `llm`: model, base_url, tools, and `api_key` masked to its last four characters.
    layers: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


class PersonaList(msgspec.Struct):
    data: list[PersonaOut]
    total_count: int
    page: int
    limit: int


def _out(item: personas.PersonaRow) -> PersonaOut:
    doc = item.document()
    if item.llm_api_key is not None:
        doc["layers"].setdefault("llm", {})["api_key"] = personas.masked(item.llm_api_key)
    return PersonaOut(
        persona_id=item.persona_id, created_at=item.created_at, updated_at=item.updated_at, **doc
    )


def url_check(services: Services) -> personas.UrlCheck:
    """`layers.llm.base_url` under the operator's rule for private addresses (a local model
    server is one: DOPPEL_ALLOW_PRIVATE_URLS=1).
    """
    return functools.partial(
        urls.check_url,
        allow_private=services.settings.allow_private_urls,
        field="layers.llm.base_url",
    )


class PersonaController(Controller):
    path = "/personas"
    tags = ["personas"]

    @post(
        "/",
        operation_id="create_persona",
        summary="A persona: how a replica behaves in a conversation",
        description="JSON `{persona_name?, system_prompt, context?, default_replica_id?, "
        'pipeline_mode?: "full", layers?: {llm: {model, base_url, api_key, tools}}}`. '
        "`tools` are OpenAI function definitions. The API key is never returned (only its "
        "last four characters).",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        data: JSONBody[dict[str, Any]],
    ) -> PersonaOut:
        item = await personas.create(services.pool, request.user.id, data, url_check(services))
        return _out(item)

    @get("/", operation_id="list_personas", summary="This tenant's personas, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
    ) -> PersonaList:
        items, total = await personas.list_page(services.pool, request.user.id, page, limit)
        return PersonaList([_out(i) for i in items], total, page, limit)

    @get("/{persona_id:str}", operation_id="get_persona", summary="One persona")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        persona_id: FromPath[str],
    ) -> PersonaOut:
        return _out(await personas.get(services.pool, request.user.id, persona_id))

    @patch(
        "/{persona_id:str}",
        operation_id="patch_persona",
        summary="Edit a persona with JSON Patch (RFC 6902)",
        description='A list of operations, e.g. `[{"op": "replace", "path": "/context", '
        '"value": "..."}]` (add, remove, replace, test), applied all or nothing; the result '
        "is checked as a new persona would be.",
    )
    async def edit(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        persona_id: FromPath[str],
        data: JSONBody[list[Any]],
    ) -> PersonaOut:
        item = await personas.patch(
            services.pool, request.user.id, persona_id, data, url_check(services)
        )
        return _out(item)

    @delete(
        "/{persona_id:str}",
        operation_id="delete_persona",
        summary="Delete a persona (its LLM key is forgotten)",
        status_code=200,
    )
    async def remove(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        persona_id: FromPath[str],
    ) -> Response[dict[str, str]]:
        await personas.delete(services.pool, request.user.id, persona_id)
        return Response({"persona_id": persona_id, "status": "deleted"}, status_code=200)
