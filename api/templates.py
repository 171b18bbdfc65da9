"""`/v2/templates`: a replica and a script with `{{variables}}`; one video per set of values
(`POST /v2/templates/{id}/videos`), or many at once through `/v2/batches`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api import inputs
from api.paging import Limit, Page
from api.state import Services
from doppel.domain import templates, videos
from doppel.domain.tenants import Tenant


class TemplateIn(msgspec.Struct):
    name: str | None = None
    replica_id: str | None = None
    #: The text to speak, with `{{name}}` where each video's value goes.
    script: str | None = None


class TemplateOut(msgspec.Struct):
    template_id: str
    name: str
    replica_id: str
    script: str
    variables: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class TemplateList(msgspec.Struct):
    data: list[TemplateOut]
    total_count: int
    page: int
    limit: int


class ValuesIn(msgspec.Struct):
    variables: dict[str, Any] = {}


class ScriptOut(msgspec.Struct):
    script: str


class TemplateVideoIn(msgspec.Struct):
    variables: dict[str, Any] = {}
    video_name: str | None = None
    disclosure_mark: bool = True
    #: Where each status change is POSTed, signed (see `GET /v2/webhook-secret`).
    callback_url: str | None = None


class TemplateVideoCreated(msgspec.Struct):
    video_id: str
    status: str


def _out(item: templates.TemplateRow) -> TemplateOut:
    return TemplateOut(
        template_id=item.template_id,
        name=item.name,
        replica_id=item.replica_id,
        script=item.script,
        variables=item.variables,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


class TemplateController(Controller):
    path = "/templates"
    tags = ["templates"]

    @post(
        "/",
        operation_id="create_template",
        summary="A script with {{variables}} for one replica",
        description="JSON `{name, replica_id, script}`; the answer lists the script's "
        "`variables` (`{{ first_name }}`: letters, digits and _). The replica may still be "
        "training; videos need it completed.",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        data: JSONBody[TemplateIn],
    ) -> TemplateOut:
        item = await templates.create(
            services.pool, request.user.id, data.name, data.replica_id, data.script
        )
        return _out(item)

    @get("/", operation_id="list_templates", summary="This tenant's templates, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
    ) -> TemplateList:
        items, total = await templates.list_page(services.pool, request.user.id, page, limit)
        return TemplateList([_out(i) for i in items], total, page, limit)

    @get("/{template_id:str}", operation_id="get_template", summary="A template and its variables")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        template_id: FromPath[str],
    ) -> TemplateOut:
        return _out(await templates.get(services.pool, request.user.id, template_id))

    @post(
        "/{template_id:str}/preview",
        operation_id="preview_template",
        summary="The script filled with some values (nothing is made)",
        description="JSON `{variables: {name: value}}` -> `{script}`; 422 naming every missing "
        "variable, or a filled script over the length limit.",
        status_code=200,
    )
    async def preview(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        template_id: FromPath[str],
        data: JSONBody[ValuesIn],
    ) -> ScriptOut:
        item = await templates.get(services.pool, request.user.id, template_id)
        return ScriptOut(script=templates.script_for(item, data.variables))

    @post(
        "/{template_id:str}/videos",
        operation_id="create_template_video",
        summary="Render one video of a template",
        description="JSON `{variables, video_name?, disclosure_mark?, callback_url?}` -> "
        '`{video_id, status: "queued"}`, then as `POST /v2/videos`.',
        status_code=200,
    )
    async def video(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        template_id: FromPath[str],
        data: JSONBody[TemplateVideoIn],
    ) -> TemplateVideoCreated:
        item = await templates.get(services.pool, request.user.id, template_id)
        script = templates.script_for(item, data.variables)
        made = await videos.create(
            services.pool,
            services.redis,
            request.user.id,
            item.replica_id,
            script,
            data.video_name or item.name,
            data.disclosure_mark,
            callback_url=await inputs.checked_callback(services.settings, data.callback_url),
            notify=services.notifier(),
        )
        return TemplateVideoCreated(video_id=made.video_id, status=made.status)

    @delete(
        "/{template_id:str}",
        operation_id="delete_template",
        summary="Delete a template (its videos and batches stay)",
        status_code=200,
    )
    async def remove(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        template_id: FromPath[str],
    ) -> Response[dict[str, str]]:
        await templates.delete(services.pool, request.user.id, template_id)
        return Response({"template_id": template_id, "status": "deleted"}, status_code=200)
