"""`/watch/{video_id}?t=<token>`: the hosted page of a ready video, for people without a key.

One self-contained HTML page (no script, no external asset: it works offline and leaks nothing
to third parties) that plays the video from its share link's stream URL, with its name, its
duration, a download link and the AI-generated disclosure. It lives outside `/v2`, so the API
key middleware never sees it; the token in the link is the only permission, checked by
doppel.domain.sharing. A bad link gets a 404 page, not JSON: a person opened it in a browser.
"""

from __future__ import annotations

import html
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.params import FromPath

from api.state import Services
from doppel.domain import conversations, sharing, videos
from doppel.errors import NotFound

#: The token is in the page's URL: keep it out of Referer headers and search indexes; the page
#: loads nothing but its own video and thumbnail.
HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; media-src 'self'; img-src 'self'; "
    "style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
}

_STYLE = """
body{margin:0;background:#111;color:#eee;font:16px/1.5 system-ui,sans-serif}
main{max-width:960px;margin:0 auto;padding:24px}
video{width:100%;max-height:75vh;background:#000;border-radius:8px}
h1{font-size:1.4rem;margin:16px 0 4px}
p{margin:4px 0;color:#bbb}
a{color:#8ab4f8}
.note{font-size:.9rem;border-left:3px solid #8ab4f8;padding-left:8px;margin-top:16px}
"""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _page(title: str, body: str, status: int) -> Response[str]:
    doc = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main>{body}</main></body></html>\n"
    )
    return Response(doc, status_code=status, media_type=MediaType.HTML, headers=HEADERS)


class WatchController(Controller):
    path = "/watch"
    tags = ["sharing"]

    @get(
        "/{video_id:str}",
        operation_id="watch_video",
        summary="A page that plays a ready video (no API key: the link's `?t=` token)",
        media_type=MediaType.HTML,
    )
    async def watch(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        video_id: FromPath[str],
    ) -> Response[str]:
        token = request.query_params.get(sharing.TOKEN_PARAM, "")
        try:
            item = await videos.shared(services.pool, video_id, token)
        except NotFound:
            return _page(
                "Video not found",
                "<h1>Video not found</h1><p>This link is wrong, or the video was deleted. "
                "Ask whoever shared it for a new link.</p>",
                404,
            )
        name = item.video_name or "Untitled video"
        if item.status != "ready":
            return _page(
                name,
                f"<h1>{html.escape(name)}</h1><p>This video is not ready yet "
                f"({html.escape(item.status)}); reload this page in a minute.</p>",
                409,
            )
        links = sharing.video_links(str(request.base_url), item.video_id, item.share_token, True)
        stream, download, poster = (
            html.escape(links[k] or "") for k in ("stream_url", "download_url", "thumbnail_url")
        )
        duration = _duration(item.duration_s)
        body = (
            f'<video controls playsinline preload="metadata" poster="{poster}" '
            f'src="{stream}"></video>'
            f"<h1>{html.escape(name)}</h1>"
            f'<p>{duration} &middot; <a href="{download}" download>Download MP4</a></p>'
            '<p class="note">AI-generated video: the person in it did not film this; '
            "it was made with Doppel from a script.</p>"
        )
        return _page(name, body, 200)


class CallPageController(Controller):
    """`/conversations/{id}?t=<token>`: a conversation's `conversation_url`, the call page.

    The page is the web app's `call/` export (web/src/app/call); it reads the conversation id
    from this path and the token from `?t=`, asks `GET /v2/conversations/{id}/join` what it may
    show, and asks for the microphone only for a call it can join. No `X-Frame-Options`: a
    customer's site may hold it in an iframe (`allow="microphone; autoplay"`).
    """

    path = "/conversations"
    tags = ["sharing"]

    @get(
        "/{conversation_id:str}",
        operation_id="call_page",
        summary="The call page of a conversation (no API key: the link's `?t=` token)",
        media_type=MediaType.HTML,
    )
    async def call_page(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        conversation_id: FromPath[str],
    ) -> Response[Any]:
        token = request.query_params.get(sharing.TOKEN_PARAM, "")
        try:
            await conversations.by_token(services.pool, conversation_id, token)
            status = 200
        except NotFound:
            status = 404  # the page itself says so, and asks for nothing
        web = services.settings.web_dir
        page = web / "call" / "index.html" if web is not None else None
        if page is None or not page.is_file():
            return _page(
                "Call page unavailable",
                "<h1>The call page is not built</h1><p>This Doppel server has no web app build "
                "(<code>cd web &amp;&amp; npm run build</code>, or <code>make up</code>).</p>",
                503,
            )
        headers = {k: v for k, v in HEADERS.items() if k != "Content-Security-Policy"}
        return Response(
            page.read_text(), status_code=status, media_type=MediaType.HTML, headers=headers
        )
