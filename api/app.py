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
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

import doppel
from api.auth import HEADER, ApiKeyMiddleware
from api.batches import BatchController
from api.calls import LiveCalls
from api.conversations import ConversationController
from api.errors import HANDLERS
from api.health import HealthController
from api.personas import PersonaController
from api.replicas import ReplicaController
from api.state import Services
from api.templates import TemplateController
from api.transcriptions import TranscriptionController
from api.videos import VideoController
from api.watch import CallPageController, WatchController
from api.webhooks import WebhookController
from doppel.domain import webhooks
from doppel.platform import db, queue
from doppel.platform.storage import LocalStorage
from doppel.settings import Settings
from doppel.triton import TritonClient

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Litestar:
    """Build the API for `settings`; clients open in the lifespan and close with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await db.create_pool(settings.database_url)
        redis = await queue.connect(settings.redis_url)
        triton = TritonClient(settings.triton_grpc_url, timeout_s=settings.triton_timeout_s)
        app.state.services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            triton=triton,
            storage=LocalStorage(settings.data_dir),
            calls=LiveCalls(settings, pool, triton, webhooks.Notifier(redis, settings.public_url)),
        )
        try:
            yield
        finally:
            await app.state.services.calls.close()
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
            PersonaController,
            ConversationController,
        ],
        middleware=[ApiKeyMiddleware],
        security=[{"apiKey": []}],
    )
    # WatchController and CallPageController are outside /v2, out of the key middleware's
    # reach: the hosted pages' links carry their tokens.
    handlers: list[ControllerRouterHandler] = [
        HealthController,
        WatchController,
        CallPageController,
        v2,
    ]
    web = settings.web_dir
    if web is not None and (web / "index.html").is_file():
        # The static export of web/ at `/` on the same origin (no CORS, one port). Litestar
        # matches the more specific `/v2`, `/health` and `/schema` paths first.
        handlers.append(
            create_static_files_router(
                path="/", directories=[web], html_mode=True, include_in_schema=False, name="web"
            )
        )
    else:
        log.info("no web app build at %s: `/` serves nothing (cd web && npm run build)", web)
    return Litestar(
        route_handlers=handlers,
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
