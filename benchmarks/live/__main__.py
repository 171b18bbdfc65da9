"""`python -m benchmarks.live`: see benchmarks/live/latency.py."""

import asyncio

from benchmarks.live.latency import main

raise SystemExit(asyncio.run(main()))
