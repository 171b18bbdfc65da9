"""Clients shared by every request of one API process, opened in the app's lifespan."""

from __future__ import annotations

import dataclasses

import asyncpg
from arq.connections import ArqRedis

from doppel.settings import Settings
from doppel.storage import LocalStorage
from doppel.triton import TritonClient


@dataclasses.dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    triton: TritonClient
    storage: LocalStorage
