"""Signed webhooks (issue 6, item 4): every status change of a replica or video that has a
`callback_url` is POSTed there as JSON, retried with backoff, and every delivery recorded.

- A status change calls `Notifier.changed(pool, kind, object_id)` (a
  `doppel.domain.notify.Notify`): it records a row in `webhook_deliveries` (the body is frozen
  then: the object's public view, doppel.domain.views, as `GET /v2/<kind>s/{id}` returns it,
  plus `event`, the status reached) and enqueues the arq job `deliver_webhook(delivery_id)`
  (job id `deliver_webhook:<delivery_id>`, so enqueueing twice sends once). A status written
  twice in a row (a video re-claimed after a dead worker) makes one delivery.
- The job (orchestrator.jobs.webhook) POSTs the body with `x-doppel-signature:
  t=<unix>,v1=<hex>`, the hex HMAC-SHA256 of `f"{t}.{body}"` keyed with the tenant's webhook
  secret (`GET /v2/webhook-secret`). A 2xx answer marks it delivered; anything else (connection
  error, timeout, redirect, non-2xx) is recorded and retried after `Settings.webhook_backoff_s`
  delays; after the last one it is given up (`next_attempt_at` NULL, `delivered_at` NULL).
- Deliveries left pending when the queue was unreachable are enqueued again when a worker
  starts (`resend_pending`).

Receivers check a request with `verify_signature(secret, header, body)`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import time
import uuid

import asyncpg
import msgspec
from arq.connections import ArqRedis

from doppel.domain import replicas, videos, views
from doppel.domain.notify import Kind
from doppel.errors import NotFound
from doppel.platform import queue

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-doppel-signature"
_TABLE = {"replica": ("replicas", "replica_id"), "video": ("videos", "video_id")}


# --- signatures --------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `x-doppel-signature` header value for `body` sent at `timestamp` (default: now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `header` signs exactly `body` with `secret`, made within `tolerance_s` of
    `now` (refuses replays of old requests). Several `v1=` values are accepted (any may match).
    """
    if not header:
        return False
    raw = body.encode() if isinstance(body, str) else body
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, raw, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, c) for c in candidates)


# --- recording and enqueueing ------------------------------------------------------------------


async def record(
    pool: asyncpg.Pool, kind: Kind, object_id: str, public_url: str
) -> uuid.UUID | None:
    """Record a delivery of `object_id`'s current status; None when it has no callback_url or
    its last delivery already carries this status.
    """
    table, key = _TABLE[kind]
    row = await pool.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", object_id)
    if row is None or not row["callback_url"]:
        return None
    if kind == "replica":
        view: views.ReplicaOut | views.VideoOut = views.replica(replicas.from_row(row), public_url)
    else:
        view = views.video(videos.from_row(row), public_url)
    body = msgspec.structs.asdict(view)
    event = f"{kind}.{row['status']}"
    body["event"] = event
    encoded = msgspec.json.encode(body).decode()
    delivery_id = uuid.uuid4()
    status = await pool.execute(
        """INSERT INTO webhook_deliveries (id, tenant_id, object_type, object_id, event, url,
                                          request_body)
           SELECT $1, $2, $3, $4, $5, $6, $7
           WHERE $5 IS DISTINCT FROM (
               SELECT event FROM webhook_deliveries
               WHERE object_type = $3 AND object_id = $4
               ORDER BY created_at DESC, id LIMIT 1)""",
        delivery_id,
        row["tenant_id"],
        kind,
        object_id,
        event,
        row["callback_url"],
        encoded,
    )
    return delivery_id if status.endswith(" 1") else None


async def record_conversation(
    pool: asyncpg.Pool,
    conversation_id: str,
    event_type: str,
    message_type: str,
    properties: dict[str, object],
) -> uuid.UUID | None:
    """Record a delivery of one of a conversation's events in Tavus's envelope
    (`{properties, conversation_id, webhook_url, event_type, message_type, timestamp}`); None
    when the conversation has no callback_url.
    """
    row = await pool.fetchrow(
        "SELECT tenant_id, callback_url FROM conversations WHERE conversation_id = $1",
        conversation_id,
    )
    if row is None or not row["callback_url"]:
        return None
    body = {
        "properties": properties,
        "conversation_id": conversation_id,
        "webhook_url": row["callback_url"],
        "event_type": event_type,
        "message_type": message_type,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
    delivery_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO webhook_deliveries (id, tenant_id, object_type, object_id, event, url,
                                          request_body)
           VALUES ($1, $2, 'conversation', $3, $4, $5, $6)""",
        delivery_id,
        row["tenant_id"],
        conversation_id,
        event_type,
        row["callback_url"],
        msgspec.json.encode(body).decode(),
    )
    return delivery_id


async def enqueue(redis: ArqRedis, delivery_id: uuid.UUID) -> bool:
    return await queue.enqueue(redis, queue.DELIVER_WEBHOOK, delivery_id)


@dataclasses.dataclass(frozen=True)
class Notifier:
    """The `Notify` the API and the worker pass to the status-changing functions of
    doppel.domain.replicas, .videos and .batches.
    """

    redis: ArqRedis | None
    public_url: str

    async def changed(self, pool: asyncpg.Pool, kind: Kind, object_id: str) -> uuid.UUID | None:
        """Record and enqueue a delivery for the new status; never raises (a webhook that
        cannot be recorded must not undo the status change; one that cannot be enqueued is
        enqueued again when a worker starts).
        """
        try:
            delivery_id = await record(pool, kind, object_id, self.public_url)
        except Exception:
            log.exception("could not record a webhook for %s %s", kind, object_id)
            return None
        if delivery_id is not None and self.redis is not None:
            try:
                await enqueue(self.redis, delivery_id)
            except Exception:
                log.warning("webhook %s not enqueued (queue down?)", delivery_id, exc_info=True)
        return delivery_id

    async def conversation(
        self,
        pool: asyncpg.Pool,
        conversation_id: str,
        event_type: str,
        message_type: str,
        properties: dict[str, object],
    ) -> uuid.UUID | None:
        """Record and enqueue a conversation's event for its callback_url; never raises."""
        try:
            delivery_id = await record_conversation(
                pool, conversation_id, event_type, message_type, properties
            )
        except Exception:
            log.exception("could not record a webhook for conversation %s", conversation_id)
            return None
        if delivery_id is not None and self.redis is not None:
            try:
                await enqueue(self.redis, delivery_id)
            except Exception:
                log.warning("webhook %s not enqueued (queue down?)", delivery_id, exc_info=True)
        return delivery_id


async def resend_pending(pool: asyncpg.Pool, redis: ArqRedis) -> int:
    """Enqueue every delivery neither delivered nor given up (idempotent); returns the count."""
    rows = await pool.fetch(
        """SELECT id FROM webhook_deliveries
           WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL"""
    )
    for row in rows:
        await enqueue(redis, row["id"])
    return len(rows)


# --- the delivery job's records (orchestrator.jobs.webhook) --------------------------------------


async def due(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    """The delivery with its tenant's `webhook_secret`; None when it was delivered, given up or
    is gone (nothing to do).
    """
    row = await pool.fetchrow(
        """SELECT d.*, t.webhook_secret FROM webhook_deliveries d
           JOIN tenants t ON t.id = d.tenant_id WHERE d.id = $1""",
        delivery_id,
    )
    if row is None or row["delivered_at"] is not None or row["next_attempt_at"] is None:
        return None
    return row


async def delivered(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, attempt: int, code: int | None
) -> None:
    await pool.execute(
        """UPDATE webhook_deliveries SET attempts = $2, last_status_code = $3,
                  last_error = NULL, delivered_at = now(), next_attempt_at = NULL
           WHERE id = $1""",
        delivery_id,
        attempt,
        code,
    )


async def attempt_failed(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    attempt: int,
    code: int | None,
    error: str,
    delay: float | None,
) -> None:
    """Record a failed attempt; the next one comes after `delay` seconds (None: given up)."""
    await pool.execute(
        """UPDATE webhook_deliveries SET attempts = $2, last_status_code = $3, last_error = $4,
                  next_attempt_at = CASE WHEN $5::float8 IS NULL THEN NULL
                                         ELSE now() + make_interval(secs => $5::float8) END
           WHERE id = $1""",
        delivery_id,
        attempt,
        code,
        error,
        delay,
    )


# --- the API's reads ---------------------------------------------------------------------------


async def secret_of(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> str:
    secret = await pool.fetchval("SELECT webhook_secret FROM tenants WHERE id = $1", tenant_id)
    if secret is None:
        raise NotFound("This API key's tenant no longer exists.")
    return str(secret)


@dataclasses.dataclass(frozen=True)
class DeliveryRow:
    id: uuid.UUID
    object_type: str
    object_id: str
    event: str
    url: str
    request_body: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime


async def list_page(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    page: int,
    limit: int,
    object_id: str | None = None,
) -> tuple[list[DeliveryRow], int]:
    """A tenant's deliveries, newest first, optionally of one replica or video."""
    where = "tenant_id = $1 AND ($2::text IS NULL OR object_id = $2)"
    total = await pool.fetchval(
        f"SELECT count(*) FROM webhook_deliveries WHERE {where}", tenant_id, object_id
    )
    rows = await pool.fetch(
        f"""SELECT * FROM webhook_deliveries WHERE {where}
            ORDER BY created_at DESC, id LIMIT $3 OFFSET $4""",
        tenant_id,
        object_id,
        limit,
        (page - 1) * limit,
    )
    fields = [f.name for f in dataclasses.fields(DeliveryRow)]
    return [DeliveryRow(**{k: r[k] for k in fields}) for r in rows], int(total)
