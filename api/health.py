"""Liveness and readiness probes (no API key needed)."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from api.state import Services


class Check(msgspec.Struct):
    ok: bool
    detail: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, Check]


async def _check(name: str, probe: object) -> tuple[str, Check]:
    try:
        ok = bool(await asyncio.wait_for(probe, timeout=3.0))  # type: ignore[arg-type]
        return name, Check(ok=ok, detail="ready" if ok else "not ready")
    except Exception as exc:
        return name, Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="health_live", summary="The API process is up")
    async def live(self) -> dict[str, str]:
        return {"status": "live"}

    @get(
        "/ready",
        operation_id="health_ready",
        summary="200 only when PostgreSQL, Redis and Triton all answer",
    )
    async def ready(self, services: NamedDependency[Services]) -> Response[Readiness]:
        results = await asyncio.gather(
            _check("postgres", services.pool.fetchval("SELECT 1")),
            _check("redis", services.redis.ping()),
            _check("triton", services.triton.ready()),
        )
        checks = dict(results)
        ok = all(c.ok for c in checks.values())
        return Response(
            Readiness(status="ready" if ok else "unavailable", checks=checks),
            status_code=200 if ok else 503,
        )
