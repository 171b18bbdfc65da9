"""Share links: a video's or a replica's media opened without the API key.

A browser's `<video src>` and `<img src>` cannot send `x-api-key`, and a hosted page is opened by
people who have no key at all. So each video and replica row carries a random `share_token`
(migration 0007), and its media URLs carry it as `?t=<token>`: the link is the permission, like
an unlisted video's link. A token is checked in constant time and stops working the moment the
video or replica is deleted; a wrong token answers exactly like an unknown id, so a link can
not be used to learn which ids exist.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

import asyncpg

from doppel.domain import replicas, videos
from doppel.errors import NotFound

#: Query parameter that carries the token in every share link.
TOKEN_PARAM = "t"


def _matches(expected: str, given: str) -> bool:
    # Constant time: the comparison's duration says nothing about how much of a guess is right.
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def video_links(base_url: str, video_id: str, token: str, ready: bool) -> dict[str, str | None]:
    """`download_url`, `stream_url`, `thumbnail_url`, `hosted_url` of a video (None until it is
    ready), based at `base_url` (the API as its callers reach it).
    """
    base = base_url.rstrip("/")
    t = f"?{TOKEN_PARAM}={quote(token, safe='')}"
    media = f"{base}/v2/videos/{video_id}"
    return {
        "download_url": f"{media}/download{t}" if ready else None,
        "stream_url": f"{media}/stream{t}" if ready else None,
        "thumbnail_url": f"{media}/thumbnail.jpg{t}" if ready else None,
        "hosted_url": f"{base}/watch/{video_id}{t}" if ready else None,
    }


def replica_thumbnail_url(base_url: str, replica_id: str, token: str) -> str:
    t = f"?{TOKEN_PARAM}={quote(token, safe='')}"
    return f"{base_url.rstrip('/')}/v2/replicas/{replica_id}/thumbnail.jpg{t}"


async def shared_video(pool: asyncpg.Pool, video_id: str, token: str) -> videos.VideoRow:
    """The video `token` opens; `NotFound` for a wrong token, an unknown or a deleted video."""
    row = await pool.fetchrow(
        "SELECT * FROM videos WHERE video_id = $1 AND status <> 'deleted'", video_id
    )
    if row is None or not _matches(row["share_token"], token):
        raise NotFound(f"No video {video_id} is shared with this link: ask for a new link.")
    return videos._from_row(row)


async def shared_replica(pool: asyncpg.Pool, replica_id: str, token: str) -> replicas.ReplicaRow:
    """The replica `token` opens; `NotFound` for a wrong token, an unknown or deleted replica."""
    row = await pool.fetchrow(
        "SELECT * FROM replicas WHERE replica_id = $1 AND deleted_at IS NULL", replica_id
    )
    if row is None or not _matches(row["share_token"], token):
        raise NotFound(f"No replica {replica_id} is shared with this link: ask for a new link.")
    return replicas._from_row(row)
