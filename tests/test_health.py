import dataclasses

from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.platform.processes import free_port
from doppel.settings import Settings
from tests.conftest import Caller, shared_file


async def test_ready_lists_every_backing_service(client: AsyncTestClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"postgres", "redis", "triton"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_triton_down_gives_503_not_500(settings: Settings, caller: Caller) -> None:
    # Nothing listens on this port: Triton is "down" for this app only.
    down = dataclasses.replace(
        settings, triton_grpc_url=f"127.0.0.1:{free_port()}", triton_timeout_s=5.0
    )
    async with AsyncTestClient(app=create_app(down), timeout=60) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["triton"]["ok"] is False
        assert checks["postgres"]["ok"] and checks["redis"]["ok"]

        jfk = shared_file("speech", "jfk.flac")
        response = await client.post(
            "/v2/transcriptions",
            headers=caller.headers,
            files={"file": (jfk.name, jfk.read_bytes(), "audio/flac")},
        )
        assert response.status_code == 503
        assert "unavailable" in response.json()["detail"]
        assert response.headers.get("retry-after")
