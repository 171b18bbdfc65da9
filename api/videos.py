"""`/v2/videos`: a completed replica speaking a script or a recording, rendered by the worker.

`download`, `stream` and `thumbnail.jpg` serve the files; the MP4 routes honour single HTTP
`Range` requests (206 with `Content-Range`), so a browser can seek in a stream. They open with
the owner's key or with the video's share token (`?t=`, doppel.domain.sharing), which the links in
`VideoOut` carry. `events` streams the video's changes as server-sent events.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import File, ServerSentEvent, Stream

from api import inputs
from api.auth import SHARE_OPT
from api.events import sse
from api.paging import Limit, Page
from api.state import Services
from doppel.audio import media
from doppel.domain import sharing, videos, views
from doppel.domain.tenants import Tenant
from doppel.domain.views import VideoOut
from doppel.errors import Conflict, InvalidRequest, NotFound
from doppel.platform import feeds

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Statuses after which a video's event stream ends.
TERMINAL = frozenset({"ready", "error", "deleted"})


class VideoIn(msgspec.Struct):
    """The text fields of `POST /v2/videos` (JSON, or beside the `audio` file of a multipart
    form). Exactly one of `script`, `audio_url` and the `audio` file.
    """

    replica_id: str | None = None
    script: str | None = None
    #: A recording to lip-sync (any format ffmpeg reads), fetched instead of a script.
    audio_url: str | None = None
    video_name: str | None = None
    disclosure_mark: bool = True
    #: Where each status change is POSTed, signed (see `GET /v2/webhook-secret`).
    callback_url: str | None = None


class VideoCreated(msgspec.Struct):
    video_id: str
    status: str


class VideoList(msgspec.Struct):
    data: list[VideoOut]
    total_count: int
    page: int
    limit: int


async def _ready_file(
    request: Request[Tenant | None, Any, Any],
    services: Services,
    video_id: str,
    thumb: bool = False,
) -> Path:
    """The video's file for its owner's key, or for its share token when no key was sent."""
    if request.user is None:
        token = request.query_params.get(sharing.TOKEN_PARAM, "")
        item = await videos.shared(services.pool, video_id, token)
    else:
        item = await videos.get(services.pool, request.user.id, video_id)
    path = item.thumbnail_path if thumb else item.video_path
    if item.status != "ready" or path is None or not path.exists():
        raise Conflict(f"Video {video_id} is not ready (status {item.status!r}).")
    return path


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `bytes=` range; None when unsatisfiable."""
    m = _RANGE.match(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix: the last N bytes
        n = int(m[2])
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
    first = int(m[1])
    last = min(int(m[2]), size - 1) if m[2] else size - 1
    return (first, last) if first <= last and first < size else None


async def _read(path: Path, first: int, last: int) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(first)
        left = last - first + 1
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def serve_mp4(request: Request[Any, Any, Any], path: Path, attachment: bool) -> Response[Any]:
    size = path.stat().st_size
    header = request.headers.get("range")
    if not header:
        return File(
            path,
            filename=path.name,
            media_type="video/mp4",
            content_disposition_type="attachment" if attachment else "inline",
            headers={"Accept-Ranges": "bytes"},
        )
    span = _byte_range(header, size)
    if span is None:
        return Response(
            {"status_code": 416, "detail": f"Range {header!r} cannot be satisfied ({size} B)."},
            status_code=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    first, last = span
    return Stream(
        _read(path, first, last),
        status_code=206,
        media_type="video/mp4",
        headers={
            "Accept-Ranges": "bytes",
            "Content-Range": f"bytes {first}-{last}/{size}",
            "Content-Length": str(last - first + 1),
        },
    )


def _finished(item: VideoOut) -> bool:
    return item.status in TERMINAL


class VideoController(Controller):
    path = "/videos"
    tags = ["videos"]

    @post(
        "/",
        operation_id="create_video",
        summary="Render a replica speaking a script or a recording",
        description="JSON `{replica_id, script | audio_url, video_name?, disclosure_mark?, "
        "callback_url?}`, or multipart with the same text fields and the recording as the file "
        "`audio`. Exactly one of `script`, `audio_url`, `audio`. Audio must have an audio "
        "track longer than 0.3 s and at most 10 minutes. Answers at once with "
        '`{video_id, status: "queued"}`; poll `GET /v2/videos/{id}`.',
        status_code=200,
    )
    async def create(
        self, request: Request[Tenant, uuid.UUID, Any], services: NamedDependency[Services]
    ) -> VideoCreated:
        settings = services.settings
        data, files = await inputs.read_body(request, VideoIn, ("audio",))
        upload = files.get("audio")
        if not data.replica_id:
            raise InvalidRequest("Send `replica_id`: the completed replica that will speak.")
        has_audio = upload is not None or bool((data.audio_url or "").strip())
        if has_audio and data.script is not None:
            raise InvalidRequest(
                "Send a script or audio, not both: the replica speaks one or the other."
            )
        callback_url = await inputs.checked_callback(settings, data.callback_url)
        notify = services.notifier()
        if not has_audio:
            item = await videos.create(
                services.pool,
                services.redis,
                request.user.id,
                data.replica_id,
                data.script,
                data.video_name,
                data.disclosure_mark,
                callback_url=callback_url,
                notify=notify,
            )
            return VideoCreated(video_id=item.video_id, status=item.status)
        # Nothing is fetched or stored for a URL Doppel may not reach or a replica that cannot
        # speak it.
        await inputs.check_urls(settings, audio_url=data.audio_url)
        await videos.speaker(services.pool, request.user.id, data.replica_id)
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=settings.data_dir) as tmp:
            scratch = Path(tmp)
            source = await inputs.media_source(
                settings, "audio", upload, data.audio_url, scratch, videos.audio_suffix
            )
            assert source is not None  # has_audio
            if isinstance(source.data, bytes):  # an upload: probed and copied from a file
                path = scratch / f"upload{source.suffix}"
                await asyncio.to_thread(path.write_bytes, source.data)
            else:
                path = source.data
            duration = await asyncio.to_thread(media.audio_duration, path)
            videos.check_audio_duration(duration)
            item = await videos.create(
                services.pool,
                services.redis,
                request.user.id,
                data.replica_id,
                None,
                data.video_name,
                data.disclosure_mark,
                callback_url=callback_url,
                notify=notify,
                audio=path,
                storage=services.storage,
            )
        return VideoCreated(video_id=item.video_id, status=item.status)

    @get("/", operation_id="list_videos", summary="This tenant's videos, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
    ) -> VideoList:
        items, total = await videos.list_page(services.pool, request.user.id, page, limit)
        return VideoList([views.video(i, str(request.base_url)) for i in items], total, page, limit)

    @get("/{video_id:str}", operation_id="get_video", summary="A video's status and links")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> VideoOut:
        item = await videos.get(services.pool, request.user.id, video_id)
        return views.video(item, str(request.base_url))

    @get(
        "/{video_id:str}/download",
        operation_id="download_video",
        summary="The MP4 file (API key or the link's `?t=` token)",
        opt={SHARE_OPT: True},
    )
    async def download(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> Response[Any]:
        path = await _ready_file(request, services, video_id)
        return serve_mp4(request, path, attachment=True)

    @get(
        "/{video_id:str}/stream",
        operation_id="stream_video",
        summary="The MP4, inline, with HTTP Range support (API key or the link's `?t=` token)",
        opt={SHARE_OPT: True},
    )
    async def stream(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> Response[Any]:
        path = await _ready_file(request, services, video_id)
        return serve_mp4(request, path, attachment=False)

    @get(
        "/{video_id:str}/thumbnail.jpg",
        operation_id="video_thumbnail",
        summary="A JPEG of the video's middle frame (API key or the link's `?t=` token)",
        opt={SHARE_OPT: True},
    )
    async def thumbnail(
        self,
        request: Request[Tenant | None, uuid.UUID | None, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> File:
        path = await _ready_file(request, services, video_id, thumb=True)
        return File(path, filename=path.name, media_type="image/jpeg")

    @get(
        "/{video_id:str}/events",
        operation_id="video_events",
        summary="Server-sent events: the video's JSON on each status or progress change",
        description="`text/event-stream`; each event's data is what `GET /v2/videos/{id}` "
        "returns, a `: keep-alive` comment comes every ~15 s, and the stream ends after "
        "`ready`, `error` or `deleted`. Close the `EventSource` then (browsers reconnect).",
    )
    async def events(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> ServerSentEvent:
        tenant_id = request.user.id
        await videos.get(services.pool, tenant_id, video_id)  # 404 before the stream starts

        async def fetch() -> VideoOut | None:
            try:
                item = await videos.get(services.pool, tenant_id, video_id)
                return views.video(item, str(request.base_url))
            except NotFound:
                return None

        feed = feeds.watch(fetch, key=lambda o: (o.status, o.progress), done=_finished)
        return ServerSentEvent(sse(feed, gone={"video_id": video_id, "status": "deleted"}))

    @delete(
        "/{video_id:str}",
        operation_id="delete_video",
        summary="Delete a video and its files",
        status_code=200,
    )
    async def remove(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> Response[dict[str, str]]:
        await videos.delete(services.pool, request.user.id, video_id)
        return Response({"video_id": video_id, "status": "deleted"}, status_code=200)
