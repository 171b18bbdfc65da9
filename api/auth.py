"""`x-api-key` authentication for every `/v2/...` route."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from doppel import tenants

HEADER = "x-api-key"


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the key to its tenant (`request.user`): 401 without a valid key, 403 if revoked."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        key = connection.headers.get(HEADER, "").strip()
        if not key:
            raise NotAuthorizedException(f"Missing {HEADER} header: send your Doppel API key.")
        services = connection.app.state.services
        found = await tenants.lookup_key(services.pool, key)
        if found is None:
            raise NotAuthorizedException("Invalid API key: check the x-api-key header.")
        if found.revoked:
            raise PermissionDeniedException("This API key has been revoked: create a new one.")
        return AuthenticationResult(user=found.tenant, auth=found.key_id)
