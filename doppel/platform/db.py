"""PostgreSQL, the source of truth for all state: the asyncpg pool and the migrations.

Migrations are plain SQL files in `doppel/migrations/`, named `NNNN_what.sql`, applied in order
at start-up inside one transaction each and recorded in `schema_migrations`. An advisory lock
makes concurrent starters (API and worker booting together) apply each file exactly once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Arbitrary constant naming the advisory lock that serialises migration runs.
_MIGRATION_LOCK = 0x646F7070  # "dopp"


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool on `database_url` and bring its schema up to date."""
    pool = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size)
    assert pool is not None
    try:
        await migrate(pool)
    except BaseException:
        await pool.close()
        raise
    return pool


def migration_files(folder: Path = MIGRATIONS_DIR) -> list[Path]:
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    versions = [f.name[:4] for f in files]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {folder}: {versions}")
    return files


async def migrate(pool: asyncpg.Pool, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       name text NOT NULL,
                       sha256 text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
            for path in migration_files(folder):
                version, sql = path.name[:4], path.read_text()
                digest = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version]["sha256"] != digest:
                        log.warning("migration %s changed after it was applied", path.name)
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                        version,
                        path.name,
                        digest,
                    )
                applied_now.append(path.name)
                log.info("applied migration %s", path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def fetch_page(
    pool: asyncpg.Pool, select: str, order: str, args: Sequence[object], page: int, limit: int
) -> tuple[list[asyncpg.Record], int]:
    """Page `page` (1-based, `limit` a page) of the rows of `select` (a `SELECT ... WHERE ...`
    whose parameters are `args`) in `order`, and how many rows it has in all: every listing
    route answers `{data, total_count, page, limit}` from this.
    """
    total = await pool.fetchval(f"SELECT count(*) FROM ({select}) AS listed", *args)
    n = len(args)
    rows = await pool.fetch(
        f"{select} ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}",
        *args,
        limit,
        (page - 1) * limit,
    )
    return list(rows), int(total)
