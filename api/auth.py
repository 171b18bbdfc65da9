"""`x-api-key` authentication for every `/v2/...` route.

Media routes marked with `SHARE_OPT` also open to a share link's token (`?t=`,
doppel.domain.sharing):
without a key, the middleware lets such a request through with no tenant (`request.user` is
None) and the handler checks the token against the one resource it serves. Everything else
needs the key.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from doppel.domain import tenants
from doppel.domain.sharing import TOKEN_PARAM

HEADER = "x-api-key"
#: Route `opt` key: the handler accepts a share link's token instead of the key.
SHARE_OPT = "share_token"


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the key to its tenant (`request.user`): 401 without a valid key, 403 if revoked."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        key = connection.headers.get(HEADER, "").strip()
        shareable = bool(connection.route_handler.opt.get(SHARE_OPT))
        if not key and shareable and connection.query_params.get(TOKEN_PARAM):
            return AuthenticationResult(user=None, auth=None)
        if not key:
            hint = " or open the share link (with its `?t=` token)" if shareable else ""
            raise NotAuthorizedException(
                f"Missing {HEADER} header: send your Doppel API key{hint}."
            )
        services = connection.app.state.services
        found = await tenants.lookup_key(services.pool, key)
        if found is None:
            raise NotAuthorizedException("Invalid API key: check the x-api-key header.")
        if found.revoked:
            raise PermissionDeniedException("This API key has been revoked: create a new one.")
        return AuthenticationResult(user=found.tenant, auth=found.key_id)
