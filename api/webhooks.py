"""Webhooks: the tenant's signing secret and the record of every delivery.

`GET /v2/webhook-secret` gives the secret that signs this tenant's callbacks
(`x-doppel-signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`; check it with
`doppel.domain.webhooks.verify_signature`). `GET /v2/webhook-deliveries` lists deliveries, newest
first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from api.paging import Limit, Page
from api.state import Services
from doppel.domain import webhooks
from doppel.domain.tenants import Tenant


class WebhookSecret(msgspec.Struct):
    webhook_secret: str
    signature_header: str
    scheme: str


class DeliveryOut(msgspec.Struct):
    delivery_id: uuid.UUID
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


class DeliveryList(msgspec.Struct):
    data: list[DeliveryOut]
    total_count: int
    page: int
    limit: int


class WebhookController(Controller):
    path = "/"
    tags = ["webhooks"]

    @get(
        "/webhook-secret",
        operation_id="get_webhook_secret",
        summary="The secret that signs this tenant's webhooks",
    )
    async def secret(
        self, request: Request[Tenant, uuid.UUID, Any], services: NamedDependency[Services]
    ) -> WebhookSecret:
        return WebhookSecret(
            webhook_secret=await webhooks.secret_of(services.pool, request.user.id),
            signature_header=webhooks.SIGNATURE_HEADER,
            scheme='t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}.{raw body}">',
        )

    @get(
        "/webhook-deliveries",
        operation_id="list_webhook_deliveries",
        summary="Webhook deliveries, newest first (optionally of one replica or video)",
    )
    async def deliveries(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        page: Page = 1,
        limit: Limit = 20,
        object_id: Annotated[
            str | None, QueryParameter(description="a replica_id or video_id")
        ] = None,
    ) -> DeliveryList:
        rows, total = await webhooks.list_page(
            services.pool, request.user.id, page, limit, object_id
        )
        out = [
            DeliveryOut(
                delivery_id=r.id,
                object_type=r.object_type,
                object_id=r.object_id,
                event=r.event,
                url=r.url,
                request_body=r.request_body,
                attempts=r.attempts,
                last_status_code=r.last_status_code,
                last_error=r.last_error,
                next_attempt_at=r.next_attempt_at,
                delivered_at=r.delivered_at,
                created_at=r.created_at,
            )
            for r in rows
        ]
        return DeliveryList(out, total, page, limit)
