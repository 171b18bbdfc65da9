"""Run one arq worker: `python -m orchestrator`."""

from __future__ import annotations

import asyncio
import logging

from doppel.settings import Settings
from orchestrator.worker import build_worker


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.set_event_loop(asyncio.new_event_loop())
    build_worker(Settings.from_env()).run()


if __name__ == "__main__":
    main()
