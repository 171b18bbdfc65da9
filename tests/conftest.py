"""The test session starts its own PostgreSQL, Redis and Triton (never assumes one is running)
with the same code `make up` uses, on free ports under a temporary run folder, and stops them
after."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from doppel.domain import tenants
from doppel.platform import db
from doppel.platform.stack import LocalPlatform
from doppel.settings import REPO_ROOT, Settings

SHARED_DATA = Path(os.environ.get("DOPPEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or a skip saying why the test cannot run here."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs the real test data at {path} (../shared/data beside the checkout; "
            "CI always has it)"
        )
    return path


async def lavfi_wav(source: str, seconds: float) -> bytes:
    """A WAV file made by one of ffmpeg's generators (`anullsrc`, `sine`, ...)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        source,
        "-t",
        str(seconds),
        "-f",
        "wav",
        "pipe:1",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"ffmpeg could not generate {source}"
    return out


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    run_dir = tmp_path_factory.mktemp("run")
    env = dict(os.environ, DOPPEL_EPHEMERAL="1")
    # The session's services are its own even if the caller's shell points at others.
    for var in (
        "DATABASE_URL",
        "REDIS_URL",
        "TRITON_GRPC_URL",
        "TRITON_HTTP_URL",
        "DOPPEL_LLM_URL",
    ):
        env.pop(var, None)
    # DOPPEL_TEST_MODEL_REPOSITORY: run against another repository (e.g. one model while
    # developing it); the default is the project's own.
    repo = os.environ.get("DOPPEL_TEST_MODEL_REPOSITORY")
    local = LocalPlatform(run_dir, env=env, **({"model_repository": Path(repo)} if repo else {}))
    try:
        local.up(fixed_ports=False, with_app=False)
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def settings(platform: LocalPlatform) -> Settings:
    ep = platform.read_endpoints()
    return Settings(
        database_url=ep["database_url"],
        redis_url=ep["redis_url"],
        triton_grpc_url=ep["triton_grpc"],
        triton_http_url=ep["triton_http"],
        data_dir=platform.run_dir / "data",
        models_dir=platform.models_dir,
        llm_url=ep["llm"],
        llm_model=ep["llm_model"],
        # Tests create many conversations nobody joins; the seat limit is tested on its own.
        max_calls=64,
    )


#: Fixtures that mean a test uses the session's services (and may run a worker).
_SERVICE_FIXTURES = {"settings", "pool", "client", "caller"}


async def clear_queue(redis_url: str) -> int:
    """Remove every job waiting in (or deferred on) the session's arq queue; returns how many.

    Tests share one Redis: a job one test leaves behind (a webhook delivery waiting out its
    production backoff after its worker process stopped, a replica queued by a test that runs no
    worker) would otherwise be run by the next test's burst worker, which waits for it.
    """
    from doppel.platform import queue

    redis = await queue.connect(redis_url)
    try:
        queued = await redis.zrange(queue.QUEUE_NAME, 0, -1)
        ids = [i.decode() if isinstance(i, bytes) else i for i in queued]
        for job in ids:
            await redis.delete(f"arq:job:{job}", f"arq:retry:{job}", f"arq:in-progress:{job}")
        await redis.delete(queue.QUEUE_NAME)
        return len(ids)
    finally:
        await redis.aclose(close_connection_pool=True)


async def _start_clean(settings: Settings) -> None:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        # (Before the first test that opens the pool, the database is not migrated yet.)
        if await conn.fetchval("SELECT to_regclass('webhook_deliveries') IS NOT NULL"):
            await conn.execute(
                """UPDATE webhook_deliveries SET next_attempt_at = NULL
                   WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL"""
            )
    finally:
        await conn.close()
    await clear_queue(settings.redis_url)


@pytest.fixture(autouse=True)
def fresh_queue(request: pytest.FixtureRequest) -> None:
    """Each test that uses the services starts with an empty job queue (see `clear_queue`) and
    no webhook delivery pending from an earlier test: a worker re-enqueues pending deliveries
    when it starts (nothing is lost), so one left waiting on a receiver that has gone would
    hold the next test's burst worker through its production backoff. Module fixtures (a
    trained replica) are set up before this runs and drain their own jobs.

    Synchronous, on its own connections and event loop (in a thread): an autouse fixture cannot
    ask for the session's async fixtures from inside the session's running loop.
    """
    if _SERVICE_FIXTURES.isdisjoint(request.fixturenames):
        return
    settings: Settings = request.getfixturevalue("settings")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _start_clean(settings)).result()


@dataclasses.dataclass
class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records the webhooks POSTed to it."""

    url: str
    #: Status codes to answer, in order; 200 once they run out.
    answers: list[int]
    got: list[tuple[dict[str, str], bytes]] = dataclasses.field(default_factory=list)

    def events(self) -> list[str]:
        import json

        return [json.loads(body)["event"] for _, body in self.got]


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    from aiohttp import web

    box = Receiver(url="", answers=[])

    async def hook(request: web.Request) -> web.Response:
        box.got.append((dict(request.headers), await request.read()))
        return web.Response(status=box.answers.pop(0) if box.answers else 200, text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    box.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield box
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[object]:
    p = await db.create_pool(settings.database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(settings), timeout=300) as c:
        yield c


@dataclasses.dataclass(frozen=True)
class Caller:
    """A tenant and one of its keys, as headers ready to send."""

    tenant: tenants.Tenant
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


async def new_caller(pool: object, prefix: str = "tenant") -> Caller:
    new = await tenants.create_key(pool, f"{prefix}-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
    return Caller(tenant=new.tenant, key=new.key)


@pytest.fixture
async def caller(pool: object) -> Caller:
    return await new_caller(pool)
