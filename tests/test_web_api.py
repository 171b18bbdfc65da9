"""What the web app relies on in the API: the videos list, the static build served at `/`
beside the API, and TypeScript types that match the OpenAPI document (issue 7)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.domain import replicas, videos
from doppel.settings import REPO_ROOT, Settings
from tests.conftest import Caller, new_caller

WEB = REPO_ROOT / "web"


async def test_videos_list_pages_newest_first_and_only_the_callers(
    client: AsyncTestClient, caller: Caller, pool: Any
) -> None:
    rid = replicas.new_id()
    await pool.execute(
        """INSERT INTO replicas (replica_id, tenant_id, replica_name, folder, train_paths, status)
           VALUES ($1, $2, 'me', '/nonexistent', '{}', 'completed')""",
        rid,
        caller.tenant.id,
    )
    ids = []
    for i in range(3):
        vid = videos.new_id()
        ids.append(vid)
        await pool.execute(
            """INSERT INTO videos (video_id, tenant_id, replica_id, script, created_at)
               VALUES ($1, $2, $3, 'Hello.', now() + make_interval(secs => $4))""",
            vid,
            caller.tenant.id,
            rid,
            float(i),
        )
    await client.delete(f"/v2/videos/{ids[0]}", headers=caller.headers)

    first = (await client.get("/v2/videos?limit=1", headers=caller.headers)).json()
    assert first["total_count"] == 2 and first["page"] == 1 and first["limit"] == 1
    assert [v["video_id"] for v in first["data"]] == [ids[2]]
    assert first["data"][0]["status"] == "queued" and first["data"][0]["stream_url"] is None
    second = (await client.get("/v2/videos?page=2&limit=1", headers=caller.headers)).json()
    assert [v["video_id"] for v in second["data"]] == [ids[1]]

    other = await new_caller(pool, "other")
    assert (await client.get("/v2/videos", headers=other.headers)).json()["total_count"] == 0
    assert (await client.get("/v2/videos?limit=101", headers=caller.headers)).status_code == 400
    assert (await client.get("/v2/videos")).status_code == 401


async def test_the_web_build_is_served_at_the_root_and_the_api_keeps_its_paths(
    settings: Settings, caller: Caller, tmp_path: Path
) -> None:
    (tmp_path / "videos" / "view").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<p>home</p>")
    (tmp_path / "videos" / "view" / "index.html").write_text("<p>player</p>")
    (tmp_path / "404.html").write_text("<p>not here</p>")
    app = create_app(dataclasses.replace(settings, web_dir=tmp_path))
    async with AsyncTestClient(app=app, timeout=60) as c:
        assert "home" in (await c.get("/")).text
        page = await c.get("/videos/view/?id=v123")
        assert page.status_code == 200 and "player" in page.text
        missing = await c.get("/no/such/page/")
        assert missing.status_code == 404 and "not here" in missing.text
        assert (await c.get("/health/live")).json() == {"status": "live"}
        assert (await c.get("/v2/videos", headers=caller.headers)).status_code == 200
        assert (await c.get("/v2/videos")).status_code == 401
        schema = (await c.get("/schema/openapi.json")).json()
        assert "/v2/videos" in schema["paths"] and "/" not in schema["paths"]

    # No build: `/` is simply not found, the API is unchanged.
    bare = create_app(dataclasses.replace(settings, web_dir=tmp_path / "absent"))
    async with AsyncTestClient(app=bare, timeout=60) as c:
        assert (await c.get("/")).status_code == 404
        assert (await c.get("/health/live")).status_code == 200


def test_settings_default_web_dir_is_the_repos_build() -> None:
    env = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "TRITON_GRPC_URL": "x:1"}
    assert Settings.from_env(env).web_dir == REPO_ROOT / "web" / "out"
    assert Settings.from_env({**env, "DOPPEL_WEB_DIR": "/srv/web"}).web_dir == Path("/srv/web")


@pytest.mark.timeout(120)
def test_generated_typescript_types_match_the_api(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "openapi-typescript").is_dir():
        pytest.skip("needs node and web/node_modules (scripts/bootstrap.sh runs npm ci)")
    fresh = tmp_path / "schema.d.ts"
    subprocess.run([node, "scripts/gen-api.mjs", str(fresh)], cwd=WEB, check=True, timeout=100)
    committed = WEB / "src" / "api" / "schema.d.ts"
    assert fresh.read_text() == committed.read_text(), (
        "web/src/api/schema.d.ts is out of date with the API: run `npm run gen:api` in web/ "
        "and commit the result"
    )
