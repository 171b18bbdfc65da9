"""`create_app(settings)`: the Litestar application factory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

import doppel
from api.auth import HEADER, ApiKeyMiddleware
from api.batches import BatchController
from api.errors import HANDLERS
from api.health import HealthController
from api.replicas import ReplicaController
from api.state import Services
from api.templates import TemplateController
from api.transcriptions import TranscriptionController
from api.videos import VideoController
from api.watch import WatchController
from api.webhooks import WebhookController
from doppel import db, jobs
from doppel.settings import Settings
from doppel.storage import LocalStorage
from doppel.triton import TritonClient

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """Build the API for `settings`; clients open in the lifespan and close with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await db.create_pool(settings.database_url)
        redis = await jobs.connect(settings.redis_url)
        triton = TritonClient(settings.triton_grpc_url, timeout_s=settings.triton_timeout_s)
        app.state.services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            triton=triton,
            storage=LocalStorage(settings.data_dir),
        )
        try:
            yield
        finally:
            await triton.close()
            await redis.aclose(close_connection_pool=True)
            await pool.close()

    def services(state: State) -> Services:
        return state.services  # type: ignore[no-any-return]

    v2 = Router(
        path="/v2",
        route_handlers=[
            TranscriptionController,
            ReplicaController,
            VideoController,
            WebhookController,
            TemplateController,
            BatchController,
        ],
        middleware=[ApiKeyMiddleware],
        security=[{"apiKey": []}],
    )
    # Outside /v2, out of the key middleware's reach: the hosted page's link carries its token.
    return Litestar(
        route_handlers=[HealthController, WatchController, v2],
        lifespan=[lifespan],
        dependencies={"services": Provide(services, sync_to_thread=False)},
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_upload_bytes,
        openapi_config=OpenAPIConfig(
            title="Doppel API",
            version=doppel.__version__,
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="apiKey", name=HEADER, security_scheme_in="header"
                    )
                }
            ),
        ),
    )
