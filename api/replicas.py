"""`/v2/replicas`: train a replica from an uploaded video (Tavus v2 field names)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter

from api.state import Services
from doppel import replicas, urls, webhooks
from doppel.errors import InvalidMedia, InvalidRequest
from doppel.tenants import Tenant


@dataclasses.dataclass
class ReplicaForm:
    #: The training video: one person talking to the camera, with sound.
    train_video: UploadFile | None = None
    replica_name: str | None = None
    #: Where each status change is POSTed, signed (see `GET /v2/webhook-secret`).
    callback_url: str | None = None


class ReplicaOut(msgspec.Struct):
    replica_id: str
    replica_name: str
    replica_type: str
    status: str
    training_progress: str
    error_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ReplicaCreated(msgspec.Struct):
    replica_id: str
    status: str


class ReplicaList(msgspec.Struct):
    data: list[ReplicaOut]
    total_count: int
    page: int
    limit: int


def _out(item: replicas.ReplicaRow) -> ReplicaOut:
    return ReplicaOut(
        replica_id=item.replica_id,
        replica_name=item.replica_name,
        replica_type=item.replica_type,
        status=item.status,
        training_progress=item.training_progress,
        error_message=item.error_message,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


class ReplicaController(Controller):
    path = "/replicas"
    tags = ["replicas"]

    @post(
        "/",
        operation_id="create_replica",
        summary="Train a replica from a video",
        description="Multipart: `train_video` (the file), `replica_name` and optionally "
        "`callback_url` (signed webhooks on each status change). Answers at once "
        'with `{replica_id, status: "started"}`; poll `GET /v2/replicas/{id}` for '
        "`training_progress` and the final `completed` or `error`.",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        data: Annotated[ReplicaForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> ReplicaCreated:
        if not isinstance(data.train_video, UploadFile):
            raise InvalidRequest(
                "Send the training video as a multipart form field named 'train_video'."
            )
        callback_url = None
        if data.callback_url:
            callback_url = await urls.check_url(
                data.callback_url,
                allow_private=services.settings.allow_private_urls,
                field="callback_url",
            )
        raw = await data.train_video.read()
        if not raw:
            raise InvalidMedia("The uploaded training video is empty.")
        item = await replicas.create(
            services.pool,
            services.redis,
            services.storage,
            request.user.id,
            replicas.clean_name(data.replica_name, ""),
            [(raw, replicas.stored_suffix(data.train_video.filename))],
            callback_url=callback_url,
            notify=webhooks.Notifier(services.redis, services.settings.public_url),
        )
        return ReplicaCreated(replica_id=item.replica_id, status=item.status)

    @get("/", operation_id="list_replicas", summary="This tenant's replicas, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Annotated[int, QueryParameter(ge=1)] = 1,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> ReplicaList:
        items, total = await replicas.list_page(services.pool, request.user.id, page, limit)
        return ReplicaList([_out(i) for i in items], total, page, limit)

    @get("/{replica_id:str}", operation_id="get_replica", summary="A replica's status")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
    ) -> ReplicaOut:
        return _out(await replicas.get(services.pool, request.user.id, replica_id))

    @delete(
        "/{replica_id:str}",
        operation_id="delete_replica",
        summary="Delete a replica (`hard=true` also removes every file)",
        status_code=200,
    )
    async def remove(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
        hard: Annotated[bool, QueryParameter(description="also remove every file")] = False,
    ) -> Response[dict[str, str]]:
        await replicas.delete(services.pool, request.user.id, replica_id, hard)
        return Response({"replica_id": replica_id, "status": "deleted"}, status_code=200)
