from pathlib import Path

import pytest

from doppel.platform import db


async def test_migrations_are_recorded_once(pool: object) -> None:
    assert await db.migrate(pool) == []  # type: ignore[arg-type]  # already applied at start
    rows = await pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")  # type: ignore[attr-defined]
    assert [r["name"] for r in rows] == [p.name for p in db.migration_files()]
    tables = {
        r["tablename"]
        for r in await pool.fetch(  # type: ignore[attr-defined]
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"tenants", "api_keys", "transcriptions", "schema_migrations"} <= tables


async def test_a_failing_migration_leaves_nothing_behind(pool: object, tmp_path: Path) -> None:
    for path in db.migration_files():
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "9001_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;"
    )
    with pytest.raises(Exception, match="no_such_table"):
        await db.migrate(pool, tmp_path)  # type: ignore[arg-type]
    assert await pool.fetchval("SELECT to_regclass('half_done')") is None  # type: ignore[attr-defined]
    assert (
        await pool.fetchval(  # type: ignore[attr-defined]
            "SELECT count(*) FROM schema_migrations WHERE version = '9001'"
        )
        == 0
    )


def test_duplicate_migration_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(RuntimeError, match="share a number"):
        db.migration_files(tmp_path)
