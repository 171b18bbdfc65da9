"""Batches: one video per row of variables for a template (doppel.domain.templates).

Each row is keyed: the client's `row_key` (or `key`) when it sends one, otherwise a hash of the
template and the row's variables. The batch itself is keyed on its template and its rows (keys
and variables), so the same submission again answers the batch made the first time and makes
nothing new; a row whose key already has a live video (queued, generating or ready) in an
earlier batch of the template reuses that video.

A row that cannot become a video (a missing variable, a filled script over the length limit)
is recorded with the reason and does not stop the others. Rows are recorded before any video is
made, so a queue outage mid-batch leaves the rest `pending`: the same submission again makes
them. Submissions for one template are serialised by an advisory lock, so two at once cannot
make two batches or two videos for one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import asyncpg
import msgspec
from arq.connections import ArqRedis

from doppel.domain import replicas, templates, videos
from doppel.domain.batch_rows import PlannedRow, batch_key, plan
from doppel.domain.notify import Notify
from doppel.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from doppel.platform import db

MAX_NAME = 200
#: Seconds a submission waits for another one on the same template before a 409.
LOCK_WAIT_S = 60.0
#: Every status a row can have, in the order `counts` lists them.
STATUSES = ("pending", "queued", "generating", "ready", "error", "deleted")
_UNFINISHED = ("pending", "queued", "generating")
#: A row's status: its video's, else `error` with a reason, else `pending` (not made yet).
_ROW_STATUS = """CASE WHEN r.video_id IS NOT NULL THEN v.status
                      WHEN r.error_message IS NOT NULL THEN 'error' ELSE 'pending' END"""


@dataclasses.dataclass(frozen=True)
class RowView:
    row_index: int
    row_key: str
    variables: dict[str, str]
    status: str
    video_id: str | None
    error_message: str | None


@dataclasses.dataclass(frozen=True)
class BatchView:
    batch_id: str
    tenant_id: uuid.UUID
    template_id: str
    batch_name: str | None
    #: The template's variables: the results' columns.
    variables: list[str]
    counts: dict[str, int]
    created_at: dt.datetime
    updated_at: dt.datetime
    rows: list[RowView]

    @property
    def status(self) -> str:
        return status_of(self.counts)


def new_id() -> str:
    return "b" + secrets.token_hex(6)


def status_of(counts: Mapping[str, int]) -> str:
    """`running` while any row may still change by itself, then `completed`."""
    return "running" if any(counts.get(s, 0) for s in _UNFINISHED) else "completed"


def counts_of(statuses: Sequence[str]) -> dict[str, int]:
    found = Counter(statuses)
    return {s: found.get(s, 0) for s in STATUSES}


# --- making the batch ---------------------------------------------------------------------------


async def _check_replica(pool: asyncpg.Pool, template: templates.TemplateRow) -> None:
    try:
        rep = await replicas.get(pool, template.tenant_id, template.replica_id)
    except NotFound as exc:
        raise Conflict(
            f"Template {template.template_id} speaks with replica {template.replica_id}, which "
            "was deleted: make a new template with a completed replica."
        ) from exc
    if rep.status != "completed":
        state = "still training" if rep.status == "started" else "failed to train"
        raise Conflict(
            f"Template {template.template_id} speaks with replica {rep.replica_id}, which is "
            f"{state} (status {rep.status!r}); a batch needs a completed replica."
        )


@contextlib.asynccontextmanager
async def _template_lock(pool: asyncpg.Pool, template_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the advisory lock of one template's submissions.

    Waiters poll with `pg_try_advisory_lock` and give their connection back between tries:
    the holder needs a second connection (videos.create takes the pool), so waiters blocked
    inside PostgreSQL while holding connections could starve it (a client retrying a big
    batch in a tight loop would otherwise deadlock the pool).
    """
    digest = hashlib.sha256(b"doppel-batch\0" + template_id.encode()).digest()
    lock = int.from_bytes(digest[:8], "big", signed=True)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                try:
                    yield conn
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", lock)
                return
        if time.monotonic() > deadline:
            raise Conflict(
                f"Another batch for template {template_id} is being recorded; send this one "
                "again in a few seconds (a repeated batch makes nothing twice)."
            )
        await asyncio.sleep(0.1)


async def create(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    tenant_id: uuid.UUID,
    template_id: str | None,
    rows: Sequence[object],
    *,
    batch_name: str | None = None,
    callback_url: str | None = None,
    disclosure_mark: bool = True,
    notify: Notify | None = None,
) -> str:
    """Record the batch and queue a video for each good row; returns the batch id (the
    earlier one for a repeated submission). Rows left `pending` by an earlier outage are made
    now with the first request's `callback_url` and `disclosure_mark`.
    """
    if not template_id:
        raise InvalidRequest("Send `template_id`: the template every row fills in.")
    template = await templates.get(pool, tenant_id, template_id)
    name = (batch_name or "").strip() or None
    if name is not None and len(name) > MAX_NAME:
        raise InvalidRequest(f"batch_name is {len(name)} characters long; at most {MAX_NAME}.")
    planned = plan(template, rows)
    key = batch_key(template.template_id, planned)
    async with _template_lock(pool, template.template_id) as conn:
        found = await conn.fetchrow(
            "SELECT * FROM batches WHERE tenant_id = $1 AND batch_key = $2", tenant_id, key
        )
        if found is None:
            await _check_replica(pool, template)
            found = await _insert(conn, template, key, planned, name, callback_url, disclosure_mark)
        await _make_videos(pool, redis, conn, template, found, planned, notify)
    return str(found["batch_id"])


async def _insert(
    conn: asyncpg.Connection,
    template: templates.TemplateRow,
    key: str,
    planned: Sequence[PlannedRow],
    name: str | None,
    callback_url: str | None,
    disclosure_mark: bool,
) -> asyncpg.Record:
    """The batch and all its rows, in one transaction (no batch is ever seen half recorded)."""
    async with conn.transaction():
        found = await conn.fetchrow(
            """INSERT INTO batches (batch_id, tenant_id, template_id, batch_name, batch_key,
                                    callback_url, disclosure_mark)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            new_id(),
            template.tenant_id,
            template.template_id,
            name,
            key,
            callback_url,
            disclosure_mark,
        )
        await conn.executemany(
            """INSERT INTO batch_rows (batch_id, row_index, row_key, variables, error_message)
               VALUES ($1, $2, $3, $4::jsonb, $5)""",
            [
                (
                    found["batch_id"],
                    p.row_index,
                    p.row_key,
                    msgspec.json.encode(p.variables).decode(),
                    p.error,
                )
                for p in planned
            ],
        )
    return found


async def _make_videos(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    conn: asyncpg.Connection,
    template: templates.TemplateRow,
    batch: asyncpg.Record,
    planned: Sequence[PlannedRow],
    notify: Notify | None,
) -> None:
    """Give each pending row a video: a live one its key already has, else a new one. Each row
    is linked as soon as its video exists, so an outage part-way loses nothing.
    """
    pending = await conn.fetch(
        """SELECT row_index FROM batch_rows
           WHERE batch_id = $1 AND video_id IS NULL AND error_message IS NULL
           ORDER BY row_index""",
        batch["batch_id"],
    )
    if not pending:
        return
    await _check_replica(pool, template)
    todo = [planned[r["row_index"] - 1] for r in pending]
    live = {
        r["row_key"]: r
        for r in await conn.fetch(
            """SELECT DISTINCT ON (r.row_key) r.row_key, v.video_id, v.script
               FROM batch_rows r JOIN batches b USING (batch_id) JOIN videos v USING (video_id)
               WHERE b.tenant_id = $1 AND b.template_id = $2 AND r.row_key = ANY($3)
                 AND v.status IN ('queued', 'generating', 'ready')
               ORDER BY r.row_key, v.created_at DESC""",
            template.tenant_id,
            template.template_id,
            [p.row_key for p in todo],
        )
    }
    label = (batch["batch_name"] or template.name)[: videos.MAX_NAME - 20]
    for p in todo:
        assert p.script is not None  # rows without a script were recorded with their error
        video_id = error = None
        earlier = live.get(p.row_key)
        if earlier is not None and earlier["script"] == p.script:
            video_id = earlier["video_id"]
        elif earlier is not None:
            error = (
                f"Row {p.row_index}: row_key `{p.row_key}` already names video "
                f"{earlier['video_id']} with a different script; give this row its own row_key."
            )
        else:
            try:
                made = await videos.create(
                    pool,
                    redis,
                    template.tenant_id,
                    template.replica_id,
                    p.script,
                    f"{label} · row {p.row_index}",
                    batch["disclosure_mark"],
                    callback_url=batch["callback_url"],
                    notify=notify,
                )
                video_id = made.video_id
            except InvalidRequest as exc:
                error = f"Row {p.row_index}: {exc.message}"
            except ServiceUnavailable as exc:
                left = len(todo) - todo.index(p)
                raise ServiceUnavailable(
                    f"Batch {batch['batch_id']} is recorded but {left} of its rows are still "
                    f"waiting for a video ({exc.message}). Send the same batch again shortly: "
                    "it makes only those."
                ) from exc
        await conn.execute(
            """UPDATE batch_rows SET video_id = $3, error_message = $4
               WHERE batch_id = $1 AND row_index = $2""",
            batch["batch_id"],
            p.row_index,
            video_id,
            error,
        )
    await conn.execute(
        "UPDATE batches SET updated_at = now() WHERE batch_id = $1", batch["batch_id"]
    )


# --- reading batches ----------------------------------------------------------------------------


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, batch_id: str) -> BatchView:
    head = await pool.fetchrow(
        """SELECT b.*, t.variables FROM batches b JOIN templates t USING (template_id)
           WHERE b.batch_id = $1 AND b.tenant_id = $2""",
        batch_id,
        tenant_id,
    )
    if head is None:
        raise NotFound(f"No batch {batch_id} exists for this API key.")
    records = await pool.fetch(
        f"""SELECT r.row_index, r.row_key, r.variables, r.video_id, {_ROW_STATUS} AS status,
                   COALESCE(r.error_message,
                            CASE WHEN v.status = 'error' THEN v.error_message END) AS error_message
            FROM batch_rows r LEFT JOIN videos v USING (video_id)
            WHERE r.batch_id = $1 ORDER BY r.row_index""",
        batch_id,
    )
    rows = [
        RowView(
            row_index=r["row_index"],
            row_key=r["row_key"],
            variables=msgspec.json.decode(r["variables"], type=dict[str, str]),
            status=r["status"],
            video_id=r["video_id"],
            error_message=r["error_message"],
        )
        for r in records
    ]
    return _view(head, counts_of([r.status for r in rows]), rows)


def _view(head: asyncpg.Record, counts: dict[str, int], rows: list[RowView]) -> BatchView:
    return BatchView(
        batch_id=head["batch_id"],
        tenant_id=head["tenant_id"],
        template_id=head["template_id"],
        batch_name=head["batch_name"],
        variables=list(head["variables"]),
        counts=counts,
        created_at=head["created_at"],
        updated_at=head["updated_at"],
        rows=rows,
    )


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int
) -> tuple[list[BatchView], int]:
    """A page of batches, newest first, with their counts (their `rows` left empty)."""
    heads, total = await db.fetch_page(
        pool,
        """SELECT b.*, t.variables FROM batches b JOIN templates t USING (template_id)
           WHERE b.tenant_id = $1""",
        "created_at DESC, batch_id",
        [tenant_id],
        page,
        limit,
    )
    tallies = await pool.fetch(
        f"""SELECT r.batch_id, {_ROW_STATUS} AS status, count(*) AS n
            FROM batch_rows r LEFT JOIN videos v USING (video_id)
            WHERE r.batch_id = ANY($1) GROUP BY 1, 2""",
        [h["batch_id"] for h in heads],
    )
    counts: dict[str, dict[str, int]] = {h["batch_id"]: counts_of([]) for h in heads}
    for t in tallies:
        counts[t["batch_id"]][t["status"]] = int(t["n"])
    return [_view(h, counts[h["batch_id"]], []) for h in heads], total


def results_csv(batch: BatchView, download_url: Callable[[str], str]) -> str:
    """The batch as CSV: `row_index,row_key,<the template's variables>,status,video_id,
    download_url,error_message`; `download_url(video_id)` gives a ready video's link.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["row_index", "row_key", *batch.variables, "status", "video_id", "download_url"]
        + ["error_message"]
    )
    for r in batch.rows:
        link = download_url(r.video_id) if r.status == "ready" and r.video_id else ""
        writer.writerow(
            [r.row_index, r.row_key, *(r.variables.get(n, "") for n in batch.variables)]
            + [r.status, r.video_id or "", link, r.error_message or ""]
        )
    return out.getvalue()
