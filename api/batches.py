"""`/v2/batches`: one video per row of values for a template, sent as JSON rows or a CSV file.

A repeated submission (same template, same rows) answers the batch made the first time and
makes no new video; see doppel.domain.batches for the keys that make that so.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath

from api import inputs
from api.paging import Limit, Page
from api.state import Services
from doppel.domain import batch_rows, batches
from doppel.domain.tenants import Tenant
from doppel.errors import InvalidRequest


class BatchIn(msgspec.Struct):
    template_id: str | None = None
    #: One object per video: `{variable: value, ..., row_key?}`.
    rows: list[Any] | None = None
    batch_name: str | None = None
    callback_url: str | None = None
    disclosure_mark: bool = True


class RowOut(msgspec.Struct):
    row_index: int
    row_key: str
    variables: dict[str, str]
    status: str
    video_id: str | None
    error_message: str | None
    download_url: str | None


class BatchOut(msgspec.Struct):
    batch_id: str
    template_id: str
    batch_name: str | None
    status: str
    counts: dict[str, int]
    row_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
    rows: list[RowOut] | None = None


class BatchList(msgspec.Struct):
    data: list[BatchOut]
    total_count: int
    page: int
    limit: int


def _links(request: Request[Any, Any, Any]) -> Callable[[str], str]:
    base = str(request.base_url).rstrip("/")
    return lambda video_id: f"{base}/v2/videos/{video_id}/download"


def _out(batch: batches.BatchView, link: Callable[[str], str] | None = None) -> BatchOut:
    rows = None
    if link is not None:
        rows = [
            RowOut(
                row_index=r.row_index,
                row_key=r.row_key,
                variables=r.variables,
                status=r.status,
                video_id=r.video_id,
                error_message=r.error_message,
                download_url=link(r.video_id) if r.status == "ready" and r.video_id else None,
            )
            for r in batch.rows
        ]
    return BatchOut(
        batch_id=batch.batch_id,
        template_id=batch.template_id,
        batch_name=batch.batch_name,
        status=batch.status,
        counts=batch.counts,
        row_count=sum(batch.counts.values()),
        created_at=batch.created_at,
        updated_at=batch.updated_at,
        rows=rows,
    )


async def _submission(request: Request[Any, Any, Any]) -> BatchIn:
    """The batch a request sends: JSON, or a multipart form with `template_id` and a CSV file
    `rows_csv` (one header row of variable names, then one row per video).
    """
    if request.content_type[0] not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            return msgspec.json.decode(await request.body(), type=BatchIn)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                "Send the batch as JSON `{template_id, rows: [{variable: value, ...}]}` or as "
                f"a multipart form with a CSV file `rows_csv`: {exc}."
            ) from exc
    form = await request.form()
    upload = form.get("rows_csv")
    if isinstance(upload, UploadFile):
        data = await upload.read()
    elif isinstance(upload, str):
        data = upload.encode()
    else:
        raise InvalidRequest(
            "Send the rows as a CSV file in the multipart field `rows_csv` (a header row of "
            "variable names, then one row per video)."
        )

    def text(field: str) -> str | None:
        value = form.get(field)
        return value if isinstance(value, str) and value.strip() else None

    mark = (text("disclosure_mark") or "true").strip().lower()
    return BatchIn(
        template_id=text("template_id"),
        rows=list(batch_rows.rows_from_csv(data)),
        batch_name=text("batch_name"),
        callback_url=text("callback_url"),
        disclosure_mark=mark not in ("false", "0", "no", "off"),
    )


class BatchController(Controller):
    path = "/batches"
    tags = ["batches"]

    @post(
        "/",
        operation_id="create_batch",
        summary="One video per row of a template's values",
        description="JSON `{template_id, rows: [{variable: value, ..., row_key?}], batch_name?, "
        "callback_url?, disclosure_mark?}`, or multipart with `template_id` and a CSV file "
        "`rows_csv` whose header row names the variables (optional `row_key` column). A row "
        "missing a variable fails alone. Answers as `GET /v2/batches/{id}`; the same "
        "submission again answers the same batch and makes nothing new.",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
    ) -> BatchOut:
        data = await _submission(request)
        batch_id = await batches.create(
            services.pool,
            services.redis,
            request.user.id,
            data.template_id,
            data.rows or [],
            batch_name=data.batch_name,
            callback_url=await inputs.checked_callback(services.settings, data.callback_url),
            disclosure_mark=data.disclosure_mark,
            notify=services.notifier(),
        )
        made = await batches.get(services.pool, request.user.id, batch_id)
        return _out(made, _links(request))

    @get("/", operation_id="list_batches", summary="This tenant's batches, newest first")
    async def list_(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
    ) -> BatchList:
        items, total = await batches.list_page(services.pool, request.user.id, page, limit)
        return BatchList([_out(i) for i in items], total, page, limit)

    @get("/{batch_id:str}", operation_id="get_batch", summary="A batch: counts and every row")
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        batch_id: FromPath[str],
    ) -> BatchOut:
        item = await batches.get(services.pool, request.user.id, batch_id)
        return _out(item, _links(request))

    @get(
        "/{batch_id:str}/results.csv",
        operation_id="batch_results_csv",
        summary="Every row's outcome as CSV",
        description="Columns `row_index,row_key,<variables...>,status,video_id,download_url,"
        "error_message`.",
    )
    async def results(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        batch_id: FromPath[str],
    ) -> Response[str]:
        item = await batches.get(services.pool, request.user.id, batch_id)
        return Response(
            batches.results_csv(item, _links(request)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{batch_id}.csv"'},
        )
