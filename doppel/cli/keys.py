"""`keys create` and `keys revoke`: API keys, straight in the database (the operator's way to the
first key, which the API cannot hand out without one).
"""

from __future__ import annotations

import argparse
import sys

from doppel.settings import Settings


async def run(args: argparse.Namespace) -> int:
    from doppel.domain import tenants
    from doppel.platform import db

    settings = Settings.from_env()
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        if args.keys_command == "create":
            new = await tenants.create_key(pool, args.tenant)
            print(f"tenant: {new.tenant.name} ({new.tenant.id})", file=sys.stderr)
            print("This key is shown once; store it now:", file=sys.stderr)
            print(new.key)
            return 0
        if await tenants.revoke_key(pool, args.key):
            print("revoked")
            return 0
        print("no such active key", file=sys.stderr)
        return 1
    finally:
        await pool.close()
