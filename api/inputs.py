"""Request bodies that come as JSON or as a multipart form on the same route, and media fields
that come as an uploaded file or as a URL to fetch.

`POST /v2/replicas` and `POST /v2/videos` take either (Tavus clients send JSON with URLs; a web
form uploads files), so their handlers read the body by its content type here instead of through
Litestar's typed `data`. Size limits hold either way: a multipart body is cut off by the app's
`request_max_body_size` (413), a URL by `doppel.platform.fetch` at the same `max_upload_bytes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType

from doppel.errors import InvalidMedia, InvalidRequest
from doppel.platform import fetch, urls
from doppel.settings import Settings

T = TypeVar("T")


async def read_body(
    request: Request[Any, Any, Any], kind: type[T], files: tuple[str, ...] = ()
) -> tuple[T, dict[str, UploadFile]]:
    """The body as `kind` (a msgspec Struct) and the uploaded `files` by field name.

    Multipart and url-encoded forms give text fields (converted leniently: "true" is a bool)
    and files; anything else is read as JSON, which has no files.
    """
    content_type, _ = request.content_type
    if content_type in (RequestEncodingType.MULTI_PART, RequestEncodingType.URL_ENCODED):
        form = await request.form()
        fields: dict[str, Any] = {}
        uploads: dict[str, UploadFile] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in files:
                    raise InvalidRequest(f"`{key}` is not a file field; send it as text.")
                uploads[key] = value
            elif key in files:
                raise InvalidRequest(f"`{key}` must be a file (a multipart file part).")
            else:
                fields[key] = value
        try:
            return msgspec.convert(fields, kind, strict=False), uploads
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"The form is not valid: {exc}.") from exc
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest(
            "The request has no body: send JSON, or a multipart form with the file."
        )
    try:
        return msgspec.json.decode(raw, type=kind), {}
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"The JSON body is not valid: {exc}.") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"The body is not JSON ({exc}); send JSON, or a multipart form with the file."
        ) from exc


async def checked_callback(settings: Settings, url: str | None) -> str | None:
    """A client's `callback_url`, checked by doppel.platform.urls (None when not given)."""
    if not url:
        return None
    return await urls.check_url(
        url, allow_private=settings.allow_private_urls, field="callback_url"
    )


async def check_urls(settings: Settings, **given: str | None) -> None:
    """Refuse any URL field Doppel may not reach before the first download starts (the fetch
    checks each hop again).
    """
    for field, url in given.items():
        if url is not None and url.strip():
            await urls.check_url(url, allow_private=settings.allow_private_urls, field=field)


@dataclasses.dataclass(frozen=True)
class Source:
    """One media input: the bytes of an upload or a file fetched from a URL, and the suffix to
    store it under (chosen from the client's name by `suffix_of`, never the name itself).
    """

    data: bytes | Path
    suffix: str


async def media_source(
    settings: Settings,
    field: str,
    upload: UploadFile | None,
    url: str | None,
    scratch: Path,
    suffix_of: Callable[[str | None], str],
) -> Source | None:
    """`field` as an upload or `<field>_url` (fetched into `scratch`); None when neither was
    sent; `InvalidRequest` when both were.
    """
    url = (url or "").strip() or None
    if upload is not None and url is not None:
        raise InvalidRequest(f"Send `{field}` or `{field}_url`, not both.")
    if upload is not None:
        raw = await upload.read()
        if not raw:
            raise InvalidMedia(f"The uploaded `{field}` is empty.")
        return Source(raw, suffix_of(upload.filename))
    if url is None:
        return None
    suffix = suffix_of(Path(urlsplit(url).path).name)
    dest = scratch / f"{field}{suffix}"
    await fetch.fetch(
        url,
        dest,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.fetch_timeout_s,
        allow_private=settings.allow_private_urls,
        field=f"{field}_url",
    )
    return Source(dest, suffix)
