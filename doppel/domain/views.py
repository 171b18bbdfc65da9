"""Each object's one public view: what `GET /v2/replicas/{id}` and `GET /v2/videos/{id}` return,
and what a webhook carries (the same JSON plus `event`).

Built once here so the API answer and the webhook body cannot drift apart. Links are based at
`base_url`: the API as the caller reached it for an answer, `Settings.public_url` for a
webhook. The class names are the OpenAPI schema names the web app is generated from
(web/src/api/schema.d.ts).
"""

from __future__ import annotations

import datetime as dt

import msgspec

from doppel.domain import sharing
from doppel.domain.replicas import ReplicaRow
from doppel.domain.videos import VideoRow


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


class VideoOut(msgspec.Struct):
    video_id: str
    replica_id: str
    video_name: str | None
    status: str
    progress: int
    error_message: str | None
    disclosure_mark: bool
    duration_s: float | None
    download_url: str | None
    stream_url: str | None
    thumbnail_url: str | None
    #: A page that plays the video, for people without an API key (`/watch/{id}?t=...`).
    hosted_url: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def replica(item: ReplicaRow, base_url: str) -> ReplicaOut:
    thumbnail_url = None
    if item.thumbnail_path.exists():
        thumbnail_url = sharing.replica_thumbnail_url(base_url, item.replica_id, item.share_token)
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


def video(item: VideoRow, base_url: str) -> VideoOut:
    links = sharing.video_links(base_url, item.video_id, item.share_token, item.status == "ready")
    return VideoOut(
        video_id=item.video_id,
        replica_id=item.replica_id,
        video_name=item.video_name,
        status=item.status,
        progress=item.progress,
        error_message=item.error_message,
        disclosure_mark=item.disclosure_mark,
        duration_s=item.duration_s,
        download_url=links["download_url"],
        stream_url=links["stream_url"],
        thumbnail_url=links["thumbnail_url"],
        hosted_url=links["hosted_url"],
        created_at=item.created_at,
        updated_at=item.updated_at,
    )
