"""Jobs held by a dead worker are run again, soon, exactly once.

arq marks a running job with `arq:in-progress:<job id>` for the longest job timeout plus 10 s
(6 hours here, for training) and leaves the job in the queue until it ends. A worker killed
mid-job (SIGKILL, OOM, a lost machine) never deletes that key, so no worker takes the job again
for hours: the video stays `generating`. Recovery therefore needs to know which jobs belong to a
dead worker:

- each worker has an id and a liveness key (`queue.WORKER_KEY_PREFIX + id`, TTL 15 s) that a
  thread refreshes every 5 s: a thread, not a task, so a busy event loop (a render's CPU work)
  cannot make a live worker look dead;
- a job records `job id -> worker id` in `queue.RUNNING_KEY` when it starts and removes it when
  it ends, whatever the outcome;
- every worker, at start-up and every `queue.RECLAIM_EVERY_S`, deletes the in-progress key of
  each job whose owner's liveness key is gone. arq then starts the job again on its next poll
  (its `arq:retry:<id>` counter makes that `job_try` 2), and the job's `claim` restarts the
  work from scratch from PostgreSQL's row (`generating` and `started` are claimable).

The check and the delete run in one Lua script, so two workers sweeping at once, or a sweep
racing the job's new start, never unlock a job that a live worker holds. A job in progress with
no owner at all (its worker died between arq's lock and the job's first line) is reclaimed once
its lock is older than `UNOWNED_GRACE_S`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis as sync_redis
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from doppel.platform import queue

log = logging.getLogger(__name__)

#: Seconds an in-progress job may have no owner recorded before it counts as orphaned (a job
#: records its owner milliseconds after arq locks it).
UNOWNED_GRACE_S = 60.0
#: Only Doppel's jobs are reclaimed (the Redis may serve other arq applications too).
FUNCTIONS = (queue.TRANSCRIBE, queue.TRAIN_REPLICA, queue.RENDER_VIDEO, queue.DELIVER_WEBHOOK)

# KEYS: in-progress key, running hash. ARGV: job id, liveness prefix, largest PTTL (ms) an
# unowned lock may have to be reclaimed, the sweeping worker's id. 1 when the lock was deleted.
_RECLAIM = """
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner then
  if owner == ARGV[4] or redis.call('EXISTS', ARGV[2] .. owner) == 1 then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 or ttl > tonumber(ARGV[3]) then return 0 end
end
return redis.call('DEL', KEYS[1])
"""
# KEYS: running hash. ARGV: job id, worker id. Forget the owner only if it is still us.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def new_worker_id() -> str:
    return uuid.uuid4().hex


class Liveness:
    """A daemon thread that keeps `queue.WORKER_KEY_PREFIX + worker_id` (and, for a long-running
    worker, the shared `queue.HEARTBEAT_KEY` that `make up` waits for) alive in Redis.
    """

    def __init__(self, redis_url: str, worker_id: str, *, heartbeat: bool) -> None:
        self.key = queue.WORKER_KEY_PREFIX + worker_id
        self._keys = [self.key, queue.HEARTBEAT_KEY] if heartbeat else [self.key]
        self._redis = sync_redis.Redis.from_url(redis_url, socket_timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="doppel-liveness", daemon=True)

    def _beat(self) -> None:
        with self._redis.pipeline() as pipe:
            for key in self._keys:
                pipe.set(key, "1", ex=queue.HEARTBEAT_TTL_S)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(queue.HEARTBEAT_EVERY_S):
            try:
                self._beat()
            except sync_redis.RedisError as exc:  # Redis away for a moment: try next beat
                log.warning("worker liveness not refreshed: %s", exc)

    def start(self) -> None:
        self._beat()  # alive before the first job can start
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        try:
            self._redis.delete(*self._keys)
        except sync_redis.RedisError as exc:
            log.warning("worker liveness keys not removed (they expire): %s", exc)
        self._redis.close()


Job = Callable[..., Awaitable[Any]]


def owned(job: Job) -> Job:
    """`job` recording, while it runs, that this worker (`ctx["worker_id"]`) holds it."""

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any) -> Any:
        redis: ArqRedis = ctx["redis"]
        job_id, worker_id = ctx["job_id"], ctx["worker_id"]
        try:
            await redis.hset(queue.RUNNING_KEY, job_id, worker_id)
        except (sync_redis.RedisError, OSError) as exc:
            # Run anyway: a job without an owner is still reclaimed, after UNOWNED_GRACE_S.
            log.warning("job %s runs without its owner recorded: %s", job_id, exc)
        try:
            return await job(ctx, *args)
        finally:
            try:  # shielded: a job cancelled by its timeout still forgets its owner
                await asyncio.shield(redis.eval(_RELEASE, 1, queue.RUNNING_KEY, job_id, worker_id))  # type: ignore[no-untyped-call]
            except (sync_redis.RedisError, OSError) as exc:  # the sweep cleans the entry up
                log.warning("job %s: owner record not removed: %s", job_id, exc)

    return run


async def reclaim(redis: ArqRedis, worker_id: str, in_progress_timeout_s: float) -> list[str]:
    """Unlock the jobs of dead workers; returns their ids (arq runs them again)."""
    candidates = {
        (k.decode() if isinstance(k, bytes) else k) for k in await redis.hkeys(queue.RUNNING_KEY)
    }
    async for key in redis.scan_iter(match=in_progress_key_prefix + "*", count=500):
        name = key.decode() if isinstance(key, bytes) else key
        candidates.add(name[len(in_progress_key_prefix) :])
    unowned_max_pttl = int((in_progress_timeout_s - UNOWNED_GRACE_S) * 1000)
    reclaimed = []
    for job_id in sorted(candidates):
        if not job_id.startswith(tuple(f"{f}:" for f in FUNCTIONS)):
            continue
        deleted = await redis.eval(  # type: ignore[no-untyped-call]
            _RECLAIM,
            2,
            in_progress_key_prefix + job_id,
            queue.RUNNING_KEY,
            job_id,
            queue.WORKER_KEY_PREFIX,
            unowned_max_pttl,
            worker_id,
        )
        if deleted:
            reclaimed.append(job_id)
    if reclaimed:
        log.warning("reclaimed %d job(s) left by dead workers: %s", len(reclaimed), reclaimed)
    return reclaimed


async def reclaim_forever(redis: ArqRedis, worker_id: str, in_progress_timeout_s: float) -> None:
    while True:
        await asyncio.sleep(queue.RECLAIM_EVERY_S)
        try:
            await reclaim(redis, worker_id, in_progress_timeout_s)
        except (sync_redis.RedisError, OSError) as exc:  # Redis away for a moment: next sweep
            log.warning("reclaim sweep failed: %s", exc)
