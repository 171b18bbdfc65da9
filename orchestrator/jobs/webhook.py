"""The `deliver_webhook` job: one attempt at a recorded webhook delivery (doppel.domain.webhooks
records it and signs it). The body is POSTed signed; a 2xx answer marks it delivered, anything
else is recorded with the delay before the next attempt (`Settings.webhook_backoff_s`), or
gives it up after the last.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import asyncpg
import httpx

from doppel.domain import webhooks
from doppel.errors import InvalidRequest
from doppel.platform import urls
from doppel.settings import Settings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    #: "delivered", "retry", "failed" (given up), or "skipped" (nothing to do).
    status: str
    #: Seconds until the next attempt, for "retry".
    retry_in: float | None = None


async def deliver(
    pool: asyncpg.Pool, settings: Settings, delivery_id: uuid.UUID, *, transport: Any = None
) -> Outcome:
    """Make one attempt at delivery `delivery_id` and record its outcome."""
    row = await webhooks.due(pool, delivery_id)
    if row is None:
        return Outcome("skipped")
    attempt = row["attempts"] + 1
    body = row["request_body"].encode()
    code: int | None = None
    error: str | None = None
    try:
        # Checked again at each attempt: the name may resolve elsewhere than when accepted.
        await urls.check_url(
            row["url"], allow_private=settings.allow_private_urls, field="callback_url"
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "Doppel-Webhooks/1",
            "x-doppel-delivery": str(delivery_id),
            "x-doppel-event": row["event"],
            webhooks.SIGNATURE_HEADER: webhooks.sign(row["webhook_secret"], body),
        }
        async with httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False, transport=transport
        ) as client:
            response = await client.post(row["url"], content=body, headers=headers)
        code = response.status_code
        if not 200 <= code < 300:
            error = f"HTTP {code}: {response.text[:200]}"
    except InvalidRequest as exc:
        error = exc.message
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if error is None:
        await webhooks.delivered(pool, delivery_id, attempt, code)
        return Outcome("delivered")
    backoff = settings.webhook_backoff_s
    delay = backoff[attempt - 1] if attempt <= len(backoff) else None
    await webhooks.attempt_failed(pool, delivery_id, attempt, code, error, delay)
    log.info("webhook %s attempt %d failed: %s", delivery_id, attempt, error)
    return Outcome("failed") if delay is None else Outcome("retry", delay)
