"""`/v2/replicas`: train a replica from an uploaded video (Tavus v2 field names).

`thumbnail.jpg` (a frame of the upload) opens with the owner's key or with the replica's share
token, which `thumbnail_url` carries: a web app shows it in an `<img>`, which cannot send a key,
without fetching blobs through script. `events` streams training progress as server-sent events.
"""

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
from litestar.response import File, ServerSentEvent

from api.auth import SHARE_OPT
from api.events import sse
from api.state import Services
from doppel import events, replicas, sharing, urls, webhooks
from doppel.errors import InvalidMedia, InvalidRequest, NotFound
from doppel.tenants import Tenant

#: Statuses after which a replica's event stream ends.
TERMINAL = frozenset({"completed", "error"})


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
    #: A JPEG of the training video, openable in an `<img>` (None: none could be made).
    thumbnail_url: str | None
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


def _out(request: Request[Any, Any, Any], item: replicas.ReplicaRow) -> ReplicaOut:
    thumbnail_url = None
    if item.thumbnail_path.exists():
        thumbnail_url = sharing.replica_thumbnail_url(
            str(request.base_url), item.replica_id, item.share_token
        )
    return ReplicaOut(
        replica_id=item.replica_id,
        replica_name=item.replica_name,
        replica_type=item.replica_type,
        status=item.status,
        training_progress=item.training_progress,
        error_message=item.error_message,
        thumbnail_url=thumbnail_url,
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
        return ReplicaList([_out(request, i) for i in items], total, page, limit)

    @get("/{replica_id:str}", operation_id="get_replica", summary="A replica's status")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
    ) -> ReplicaOut:
        return _out(request, await replicas.get(services.pool, request.user.id, replica_id))

    @get(
        "/{replica_id:str}/thumbnail.jpg",
        operation_id="replica_thumbnail",
        summary="A JPEG of the training video (API key or the link's `?t=` token)",
        opt={SHARE_OPT: True},
    )
    async def thumbnail(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
    ) -> File:
        if request.user is None:
            token = request.query_params.get(sharing.TOKEN_PARAM, "")
            item = await sharing.shared_replica(services.pool, replica_id, token)
        else:
            item = await replicas.get(services.pool, request.user.id, replica_id)
        if not item.thumbnail_path.exists():
            raise NotFound(f"Replica {replica_id} has no thumbnail (its video gave no frame).")
        return File(item.thumbnail_path, filename="thumbnail.jpg", media_type="image/jpeg")

    @get(
        "/{replica_id:str}/events",
        operation_id="replica_events",
        summary="Server-sent events: the replica's JSON on each status or progress change",
        description="`text/event-stream`; each event's data is what `GET /v2/replicas/{id}` "
        "returns, a `: keep-alive` comment comes every ~15 s, and the stream ends after "
        "`completed` or `error` (or a `deleted` event). Close the `EventSource` then.",
    )
    async def events(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
    ) -> ServerSentEvent:
        tenant_id = request.user.id
        await replicas.get(services.pool, tenant_id, replica_id)  # 404 before the stream

        async def fetch() -> ReplicaOut | None:
            try:
                return _out(request, await replicas.get(services.pool, tenant_id, replica_id))
            except NotFound:
                return None

        feed = events.watch(
            fetch,
            key=lambda o: (o.status, o.training_progress),
            done=lambda o: o.status in TERMINAL,
        )
        return ServerSentEvent(sse(feed, gone={"replica_id": replica_id, "status": "deleted"}))

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
