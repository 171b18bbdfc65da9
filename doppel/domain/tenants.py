"""Tenants and their API keys.

A key is `dpl_` followed by 43 URL-safe random characters (256 bits). Only its sha256 is stored:
with that much entropy a plain hash cannot be reversed, and lookups stay a single indexed read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid

import asyncpg

KEY_PREFIX = "dpl_"


@dataclasses.dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str


@dataclasses.dataclass(frozen=True)
class KeyLookup:
    """What an API key resolves to. `revoked` keys still name their tenant (for a 403)."""

    tenant: Tenant
    key_id: uuid.UUID
    revoked: bool


@dataclasses.dataclass(frozen=True)
class NewKey:
    tenant: Tenant
    key_id: uuid.UUID
    #: The plaintext key: shown once, never stored.
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def ensure_tenant(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> Tenant:
    name = name.strip()
    if not name:
        raise ValueError("a tenant needs a non-empty name")
    row = await conn.fetchrow(
        """INSERT INTO tenants (id, name) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id, name""",
        uuid.uuid4(),
        name,
    )
    return Tenant(id=row["id"], name=row["name"])


async def create_key(pool: asyncpg.Pool, tenant_name: str) -> NewKey:
    """Create tenant `tenant_name` if needed and a new API key for it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        tenant = await ensure_tenant(conn, tenant_name)
        key_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, prefix) VALUES ($1, $2, $3, $4)",
            key_id,
            tenant.id,
            hash_key(key),
            key[: len(KEY_PREFIX) + 6],
        )
    return NewKey(tenant=tenant, key_id=key_id, key=key)


async def revoke_key(pool: asyncpg.Pool, key: str) -> bool:
    """Revoke `key`; returns False when no such (unrevoked) key exists."""
    status = await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(key),
    )
    return status.endswith(" 1")


async def lookup_key(pool: asyncpg.Pool, key: str) -> KeyLookup | None:
    row = await pool.fetchrow(
        """SELECT k.id AS key_id, k.revoked_at, t.id AS tenant_id, t.name
           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
           WHERE k.key_hash = $1""",
        hash_key(key),
    )
    if row is None:
        return None
    return KeyLookup(
        tenant=Tenant(id=row["tenant_id"], name=row["name"]),
        key_id=row["key_id"],
        revoked=row["revoked_at"] is not None,
    )
