"""Clients shared by every request of one API process, opened in the app's lifespan."""

from __future__ import annotations

import dataclasses

import asyncpg
from arq.connections import ArqRedis

from api.calls import LiveCalls
from doppel.domain import webhooks
from doppel.platform.storage import LocalStorage
from doppel.settings import Settings
from doppel.triton import TritonClient


@dataclasses.dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    triton: TritonClient
    storage: LocalStorage
    #: The live calls this process holds (api/calls.py).
    calls: LiveCalls

    def notifier(self) -> webhooks.Notifier:
        """Webhooks for the status changes a request makes, their links at the public URL."""
        return webhooks.Notifier(self.redis, self.settings.public_url)
