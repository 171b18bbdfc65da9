"""The one place where domain errors become HTTP statuses.

Bodies keep Litestar's shape, `{"status_code": N, "detail": "..."}`, with a message written
for the caller.
"""

from __future__ import annotations

import logging

import asyncpg
import redis.exceptions
from litestar import Request, Response

from doppel.errors import (
    Conflict,
    DoppelError,
    InferenceFailed,
    InvalidMedia,
    InvalidRequest,
    Malformed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

#: First match wins: a subclass comes before its base (PayloadTooLarge is an InvalidRequest).
STATUS = {
    PayloadTooLarge: 413,
    Malformed: 400,
    InvalidMedia: 422,
    InvalidRequest: 422,
    NotFound: 404,
    Conflict: 409,
    ServiceUnavailable: 503,
    InferenceFailed: 502,
}


def _body(status: int, detail: str, retry_after: int = 5) -> Response[dict[str, object]]:
    headers = {"Retry-After": str(retry_after)} if status == 503 else None
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def domain_error(_: Request, exc: Exception) -> Response[dict[str, object]]:
    assert isinstance(exc, DoppelError)
    status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 400)
    return _body(status, exc.message, int(getattr(exc, "retry_after", 5)))


def backing_service_down(_: Request, exc: Exception) -> Response[dict[str, object]]:
    log.warning("backing service unavailable: %r", exc)
    return _body(503, "A backing service (database or queue) is unavailable; try again shortly.")


HANDLERS = {
    DoppelError: domain_error,
    asyncpg.exceptions.PostgresConnectionError: backing_service_down,
    asyncpg.exceptions.ConnectionDoesNotExistError: backing_service_down,
    asyncpg.exceptions.InterfaceError: backing_service_down,
    redis.exceptions.ConnectionError: backing_service_down,
    redis.exceptions.TimeoutError: backing_service_down,
    ConnectionError: backing_service_down,
}
