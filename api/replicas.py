"""`/v2/replicas`: train a replica from an uploaded or fetched video (Tavus v2 field names).

`thumbnail.jpg` (a frame of the upload) opens with the owner's key or with the replica's share
token, which `thumbnail_url` carries: a web app shows it in an `<img>`, which cannot send a key,
without fetching blobs through script. `events` streams training progress as server-sent events.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import File, ServerSentEvent

from api import inputs
from api.auth import SHARE_OPT
from api.events import sse
from api.paging import Limit, Page
from api.state import Services
from doppel.domain import replicas, sharing, views
from doppel.domain.tenants import Tenant
from doppel.domain.views import ReplicaOut
from doppel.errors import InvalidRequest, NotFound
from doppel.face import video
from doppel.platform import feeds
from doppel.replica import consent

#: Statuses after which a replica's event stream ends.
TERMINAL = frozenset({"completed", "error"})


class ReplicaIn(msgspec.Struct):
    """The text fields of `POST /v2/replicas` (JSON, or beside the files of a multipart form)."""

    #: The person's name, as they say it in the consent statement.
    replica_name: str | None = None
    #: The training video (one person talking to the camera, with sound) to fetch, instead of
    #: uploading `train_video`.
    train_video_url: str | None = None
    #: A separate video of the consent statement, instead of uploading `consent_video`.
    consent_video_url: str | None = None
    #: Where each status change is POSTed, signed (see `GET /v2/webhook-secret`).
    callback_url: str | None = None


class ConsentStatement(msgspec.Struct):
    statement: str


class ReplicaCreated(msgspec.Struct):
    replica_id: str
    status: str


class ReplicaList(msgspec.Struct):
    data: list[ReplicaOut]
    total_count: int
    page: int
    limit: int


class ReplicaController(Controller):
    path = "/replicas"
    tags = ["replicas"]

    @post(
        "/",
        operation_id="create_replica",
        summary="Train a replica from a video",
        description="Multipart (`train_video` file, optional `consent_video` file, text fields) "
        "or JSON: `replica_name` (the person's name), the training video as `train_video` or "
        "`train_video_url`, optionally a separate consent video as `consent_video` or "
        "`consent_video_url`, and `callback_url` (signed webhooks on each status change). The "
        "person must be heard saying the consent statement (`GET "
        "/v2/replicas/consent-statement?name=...`) in the consent video, else in the training "
        'video. Answers at once with `{replica_id, status: "started"}`; poll `GET '
        "/v2/replicas/{id}` for `training_progress` and the final `completed` or `error`.",
        status_code=200,
    )
    async def create(
        self, request: Request[Tenant, uuid.UUID, Any], services: NamedDependency[Services]
    ) -> ReplicaCreated:
        settings = services.settings
        data, files = await inputs.read_body(request, ReplicaIn, ("train_video", "consent_video"))
        train_upload, consent_upload = files.get("train_video"), files.get("consent_video")
        if train_upload is None and not (data.train_video_url or "").strip():
            raise InvalidRequest(
                "Send the training video: a multipart file field `train_video`, or "
                "`train_video_url`."
            )
        callback_url = await inputs.checked_callback(settings, data.callback_url)
        name = replicas.clean_name(data.replica_name, "")
        if not name:
            raise InvalidRequest(
                "Send `replica_name`: the person's name, as they say it in the consent "
                "statement (see GET /v2/replicas/consent-statement?name=...)."
            )
        await inputs.check_urls(
            settings,
            train_video_url=data.train_video_url,
            consent_video_url=data.consent_video_url,
        )
        # Fetched files wait in a scratch folder beside the data (same disk) until
        # replicas.create copies them under the replica's id; the folder goes either way.
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=settings.data_dir) as tmp:
            scratch = Path(tmp)
            train = await inputs.media_source(
                settings,
                "train_video",
                train_upload,
                data.train_video_url,
                scratch,
                replicas.stored_suffix,
            )
            assert train is not None  # checked above
            consent_video = await inputs.media_source(
                settings,
                "consent_video",
                consent_upload,
                data.consent_video_url,
                scratch,
                replicas.stored_suffix,
            )
            item = await replicas.create(
                services.pool,
                services.redis,
                services.storage,
                request.user.id,
                name,
                [(train.data, train.suffix)],
                callback_url=callback_url,
                notify=services.notifier(),
                consent=None
                if consent_video is None
                else (consent_video.data, consent_video.suffix),
                probe=video.probe,
            )
        return ReplicaCreated(replica_id=item.replica_id, status=item.status)

    @get(
        "/consent-statement",
        operation_id="replica_consent_statement",
        summary="The sentence a person says to consent to their replica",
        description="Show it before the upload: the person says it, with their name, in the "
        "training video or in a separate `consent_video`.",
    )
    async def consent_statement(
        self, name: Annotated[str, QueryParameter(min_length=1, max_length=200)]
    ) -> ConsentStatement:
        clean = replicas.clean_name(name, "")
        if not clean:
            raise InvalidRequest("Send `name`: the person's name, as they will say it.")
        return ConsentStatement(statement=consent.statement(clean))

    @get("/", operation_id="list_replicas", summary="This tenant's replicas, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
    ) -> ReplicaList:
        items, total = await replicas.list_page(services.pool, request.user.id, page, limit)
        return ReplicaList(
            [views.replica(i, str(request.base_url)) for i in items], total, page, limit
        )

    @get("/{replica_id:str}", operation_id="get_replica", summary="A replica's status")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        replica_id: FromPath[str],
    ) -> ReplicaOut:
        item = await replicas.get(services.pool, request.user.id, replica_id)
        return views.replica(item, str(request.base_url))

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
            item = await replicas.shared(services.pool, replica_id, token)
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
                item = await replicas.get(services.pool, tenant_id, replica_id)
                return views.replica(item, str(request.base_url))
            except NotFound:
                return None

        feed = feeds.watch(
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
