"""Fetching a client's URL (`train_video_url`, `consent_video_url`, `audio_url`) to a local file.

Every hop is judged by `doppel.platform.urls.check_url` before it is connected to: redirects are
followed
by hand (at most `MAX_REDIRECTS`), so a public URL cannot bounce Doppel onto a loopback, private
or link-local address (the cloud metadata service). The body is streamed to disk and cut off at
`max_bytes` (by `Content-Length` when the server announces it, and by the bytes counted, since a
server may lie or not say) and at `timeout_s` for the whole fetch, redirects included. Whatever
goes wrong, nothing is left at `dest`, and the error is a 4xx a person can act on.

A host name is resolved by the check and again by the HTTP client; a DNS answer that changes in
between (rebinding) is not caught. The operator's `DOPPEL_ALLOW_PRIVATE_URLS` is for trusted
setups only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urljoin

import httpx

from doppel.errors import InvalidRequest, PayloadTooLarge
from doppel.platform import urls

MAX_REDIRECTS = 5
CHUNK = 256 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}


def size_text(n: int) -> str:
    """`n` bytes for a person: "512 MiB", "64 KiB", "900 B"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def too_large(field: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"`{field}` is larger than {size_text(max_bytes)}, the most this server accepts "
        "(DOPPEL_MAX_UPLOAD_BYTES): send a shorter or more compressed file."
    )


async def fetch(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool = False,
    field: str = "url",
) -> int:
    """Download `url` into `dest` (created; its folder must exist); returns the bytes written.

    Raises `InvalidRequest` (422) for a URL Doppel may not reach, one that cannot be reached,
    answers non-2xx, redirects too often or takes longer than `timeout_s`, and
    `PayloadTooLarge` (413) for a body over `max_bytes`.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, dest, max_bytes, allow_private, field)
    except TimeoutError as exc:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise InvalidRequest(
            f"`{field}` took longer than {timeout_s:g} s to download; use a faster host or a "
            "smaller file."
        ) from exc
    except BaseException:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise


async def _fetch(url: str, dest: Path, max_bytes: int, allow_private: bool, field: str) -> int:
    current = await urls.check_url(url, allow_private=allow_private, field=field)
    # No environment proxies: a proxy would connect on our behalf to whatever it is told.
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", current) as response:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise InvalidRequest(
                                f"`{field}` answered {response.status_code} (a redirect) "
                                "without a Location."
                            )
                        current = await urls.check_url(
                            urljoin(current, location), allow_private=allow_private, field=field
                        )
                        continue
                    if not 200 <= response.status_code < 300:
                        raise InvalidRequest(
                            f"`{field}` answered HTTP {response.status_code} "
                            f"{response.reason_phrase}: check that the URL is right and public."
                        )
                    announced = response.headers.get("content-length", "")
                    if announced.isdigit() and int(announced) > max_bytes:
                        raise too_large(field, max_bytes)
                    return await _save(response, dest, max_bytes, field)
            except httpx.HTTPError as exc:
                raise InvalidRequest(
                    f"`{field}` could not be downloaded ({type(exc).__name__}: {exc}); check "
                    "that the URL is right and its host is up."
                ) from exc
    raise InvalidRequest(f"`{field}` redirected more than {MAX_REDIRECTS} times.")


async def _save(response: httpx.Response, dest: Path, max_bytes: int, field: str) -> int:
    written = 0
    fh = await asyncio.to_thread(dest.open, "wb")
    try:
        async for chunk in response.aiter_bytes(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise too_large(field, max_bytes)
            await asyncio.to_thread(fh.write, chunk)
    finally:
        await asyncio.to_thread(fh.close)
    if written == 0:
        raise InvalidRequest(f"`{field}` answered with an empty body.")
    return written
