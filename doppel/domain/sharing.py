"""Share links: a video's or a replica's media opened without the API key.

A browser's `<video src>` and `<img src>` cannot send `x-api-key`, and a hosted page is opened by
people who have no key at all. So each video and replica row carries a random `share_token`
(migration 0007), and its media URLs carry it as `?t=<token>`: the link is the permission, like
an unlisted video's link. A token is checked in constant time and stops working the moment the
video or replica is deleted; a wrong token answers exactly like an unknown id, so a link can
not be used to learn which ids exist.

A leaf: the records (doppel.domain.replicas, .videos) check tokens with `matches` and the public
views (doppel.domain.views) build links with it; it imports none of them.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

#: Query parameter that carries the token in every share link.
TOKEN_PARAM = "t"


def matches(expected: str, given: str) -> bool:
    """True when `given` is the row's token `expected` (a row without one opens nothing)."""
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
