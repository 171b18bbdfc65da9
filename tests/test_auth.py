import asyncio
import os
import subprocess
import sys

from litestar.testing import AsyncTestClient

from doppel.domain import tenants
from doppel.settings import REPO_ROOT, Settings
from tests.conftest import Caller

ROUTE = "/v2/transcriptions/00000000-0000-0000-0000-000000000000"


async def test_missing_key_is_401(client: AsyncTestClient) -> None:
    response = await client.get(ROUTE)
    assert response.status_code == 401
    assert "x-api-key" in response.json()["detail"]


async def test_invalid_key_is_401(client: AsyncTestClient) -> None:
    response = await client.get(ROUTE, headers={"x-api-key": "dpl_not-a-real-key"})
    assert response.status_code == 401
    assert "Invalid API key" in response.json()["detail"]


async def test_valid_key_reaches_the_route(client: AsyncTestClient, caller: Caller) -> None:
    response = await client.get(ROUTE, headers=caller.headers)
    assert response.status_code == 404  # authenticated; the transcription just does not exist


async def test_revoked_key_is_403(client: AsyncTestClient, pool: object, caller: Caller) -> None:
    assert await tenants.revoke_key(pool, caller.key)  # type: ignore[arg-type]
    response = await client.get(ROUTE, headers=caller.headers)
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]


async def test_keys_are_stored_only_as_hashes(pool: object, caller: Caller) -> None:
    rows = await pool.fetch(
        "SELECT key_hash, prefix FROM api_keys WHERE tenant_id = $1",  # type: ignore[attr-defined]
        caller.tenant.id,
    )
    assert [r["key_hash"] for r in rows] == [tenants.hash_key(caller.key)]
    assert caller.key not in {r["key_hash"] for r in rows}
    assert caller.key.startswith(rows[0]["prefix"]) and len(rows[0]["prefix"]) < 12


async def test_health_and_schema_need_no_key(client: AsyncTestClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/v2/transcriptions" in paths or "/v2/transcriptions/" in paths


async def test_cli_creates_a_working_key(client: AsyncTestClient, settings: Settings) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        TRITON_GRPC_URL=settings.triton_grpc_url,
        PYTHONPATH=str(REPO_ROOT),
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "doppel", "keys", "create", "--tenant", "cli-tenant"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = done.stdout.strip()
    assert key.startswith(tenants.KEY_PREFIX) and "\n" not in key
    assert "shown once" in done.stderr
    response = await client.get(ROUTE, headers={"x-api-key": key})
    assert response.status_code == 404
