"""Replicas: a person's trained face and voice, made by the `train_replica` job
(orchestrator.jobs.replica).

The row in `replicas` is the job's state. The API (or the operator CLI) stores the training
video(s) under the replica's id, inserts the row `started` and enqueues the job; the job first
checks a `user` replica's spoken consent (its transcript is recorded here), then trains, writes
`training_progress` ("37/100") as it goes and ends the row `completed` or `error` with a message
for the person.

Layout of a replica's folder (`<data>/<tenant>/replicas/<replica_id>/`): `sources/0.mp4, ...`
(the uploads, renamed), `sources/consent.mp4` (a separate consent video, when sent) and
`model/` (the trained replica, doppel.replica.training).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
from arq.connections import ArqRedis

from doppel.domain import sharing
from doppel.domain.notify import Notify
from doppel.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from doppel.platform import db, queue
from doppel.platform.storage import LocalStorage

log = logging.getLogger(__name__)

#: Video containers kept as the stored file's suffix; anything else is stored as `.mp4`
#: (ffmpeg reads by content, the name is only a hint).
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
MAX_NAME = 200
#: The replica's picture in its folder, from the first upload (see `write_thumbnail`).
THUMBNAIL = "thumbnail.jpg"
#: Widest thumbnail, in pixels: a card in a web app, not a poster.
THUMBNAIL_MAX_WIDTH = 480


@dataclasses.dataclass(frozen=True)
class ReplicaRow:
    replica_id: str
    tenant_id: uuid.UUID
    replica_name: str
    replica_type: str
    status: str
    training_progress: str
    error_message: str | None
    folder: Path
    train_paths: list[Path]
    consent_path: Path | None
    consent_transcript: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    #: Opens the thumbnail without the API key (doppel.domain.sharing).
    share_token: str = ""

    @property
    def model_folder(self) -> Path:
        return self.folder / "model"

    @property
    def thumbnail_path(self) -> Path:
        return self.folder / THUMBNAIL


def from_row(row: asyncpg.Record) -> ReplicaRow:
    return ReplicaRow(
        replica_id=row["replica_id"],
        tenant_id=row["tenant_id"],
        replica_name=row["replica_name"],
        replica_type=row["replica_type"],
        status=row["status"],
        training_progress=row["training_progress"],
        error_message=row["error_message"],
        folder=Path(row["folder"]),
        train_paths=[Path(p) for p in row["train_paths"]],
        consent_path=Path(row["consent_path"]) if row["consent_path"] else None,
        consent_transcript=row["consent_transcript"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        share_token=row["share_token"],
    )


def new_id() -> str:
    return "r" + secrets.token_hex(6)


def clean_name(name: str | None, fallback: str) -> str:
    name = re.sub(r"\s+", " ", (name or "").strip())
    if len(name) > MAX_NAME:
        raise InvalidRequest(f"replica_name is {len(name)} characters long; at most {MAX_NAME}.")
    return name or fallback


def stored_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".mp4"


async def create(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    storage: LocalStorage,
    tenant_id: uuid.UUID,
    name: str,
    uploads: Sequence[tuple[bytes | Path, str]],
    *,
    replica_type: str = "user",
    callback_url: str | None = None,
    notify: Notify | None = None,
    consent: tuple[bytes | Path, str] | None = None,
    probe: Callable[[Path], object],
) -> ReplicaRow:
    """Store `uploads` ((bytes or a file to copy, suffix) each) and the optional `consent`
    video under a new id, check each stored file with `probe` (the engine's reader, e.g.
    `doppel.face.video.probe`: `InvalidMedia` when it is no readable video, nothing kept),
    record the replica `started` and enqueue its training. A queue that cannot be reached undoes
    everything (`ServiceUnavailable`).
    """
    rid = new_id()
    folder = storage.path_for(tenant_id, "replicas", rid)
    paths: list[Path] = []
    consent_path: Path | None = None
    try:
        for i, (data, suffix) in enumerate(uploads):
            paths.append(
                await _store_video(storage, tenant_id, f"{rid}/sources/{i}{suffix}", data, probe)
            )
        if consent is not None:
            data, suffix = consent
            key = f"{rid}/sources/consent{suffix}"
            consent_path = await _store_video(storage, tenant_id, key, data, probe)
        if paths:
            await asyncio.to_thread(write_thumbnail, paths[0], folder / THUMBNAIL)
        row = await pool.fetchrow(
            """INSERT INTO replicas (replica_id, tenant_id, replica_name, replica_type, folder,
                                     train_paths, callback_url, consent_path)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
            rid,
            tenant_id,
            name_or(rid, name),
            replica_type,
            str(folder),
            [str(p) for p in paths],
            callback_url,
            None if consent_path is None else str(consent_path),
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    try:
        await queue.enqueue(redis, queue.TRAIN_REPLICA, rid)
    except (OSError, ConnectionError, TimeoutError) as exc:
        await pool.execute("DELETE FROM replicas WHERE replica_id = $1", rid)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise ServiceUnavailable("The job queue is unavailable; try again shortly.") from exc
    if notify is not None:  # webhook: started
        await notify.changed(pool, "replica", rid)
    return from_row(row)


async def _store_video(
    storage: LocalStorage,
    tenant_id: uuid.UUID,
    key: str,
    data: bytes | Path,
    probe: Callable[[Path], object],
) -> Path:
    """Store one video under `key` and check `probe` reads it as a video (`InvalidMedia`)."""
    if isinstance(data, Path):
        path = await asyncio.to_thread(storage.put_file, tenant_id, "replicas", key, data)
    else:
        path = await asyncio.to_thread(storage.put, tenant_id, "replicas", key, data)
    await asyncio.to_thread(probe, path)
    return path


def write_thumbnail(source: Path, jpg: Path) -> bool:
    """A frame about 1 s into `source` (past a fade-in or the first blink), at most
    `THUMBNAIL_MAX_WIDTH` wide, written to `jpg` whole or not at all. Best effort: a replica is
    still trained without its picture, so a failure is logged, not raised (False).
    """
    part = jpg.with_name(f".{jpg.stem}.{uuid.uuid4().hex}.part.jpg")
    scale = f"scale='min({THUMBNAIL_MAX_WIDTH},iw)':-2"
    try:
        for at_s in ("1", "0"):  # a clip shorter than 1 s has no frame there: take its first
            subprocess.run(
                [
                    "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", at_s,
                    "-i", str(source), "-frames:v", "1", "-vf", scale, "-q:v", "3",
                    "-f", "image2", str(part),
                ],
                check=False,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
            if part.exists() and part.stat().st_size > 0:
                part.rename(jpg)
                return True
        log.warning("no thumbnail for %s: ffmpeg made no frame", source)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("no thumbnail for %s: %s", source, exc)
    finally:
        part.unlink(missing_ok=True)
    return False


def name_or(rid: str, name: str) -> str:
    return name or f"replica {rid}"


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, replica_id: str) -> ReplicaRow:
    row = await pool.fetchrow(
        """SELECT * FROM replicas
           WHERE replica_id = $1 AND tenant_id = $2 AND deleted_at IS NULL""",
        replica_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No replica {replica_id} exists for this API key.")
    return from_row(row)


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int
) -> tuple[list[ReplicaRow], int]:
    """One page of the tenant's replicas, newest first, and how many there are in all."""
    rows, total = await db.fetch_page(
        pool,
        "SELECT * FROM replicas WHERE tenant_id = $1 AND deleted_at IS NULL",
        "created_at DESC, replica_id",
        [tenant_id],
        page,
        limit,
    )
    return [from_row(r) for r in rows], total


async def delete(pool: asyncpg.Pool, tenant_id: uuid.UUID, replica_id: str, hard: bool) -> None:
    """Soft delete (hidden from the API, files kept) or, with `hard`, remove every file too."""
    item = await get(pool, tenant_id, replica_id)
    await pool.execute(
        "UPDATE replicas SET deleted_at = now(), updated_at = now() WHERE replica_id = $1",
        replica_id,
    )
    if hard:
        await asyncio.to_thread(shutil.rmtree, item.folder, True)


async def shared(pool: asyncpg.Pool, replica_id: str, token: str) -> ReplicaRow:
    """The replica `token` opens; `NotFound` for a wrong token, an unknown or deleted replica."""
    row = await pool.fetchrow(
        "SELECT * FROM replicas WHERE replica_id = $1 AND deleted_at IS NULL", replica_id
    )
    if row is None or not sharing.matches(row["share_token"], token):
        raise NotFound(f"No replica {replica_id} is shared with this link: ask for a new link.")
    return from_row(row)


async def model_folder_of(pool: asyncpg.Pool, replica_id: str) -> Path:
    """The trained replica a video job renders (`Conflict` when it is no longer completed)."""
    row = await pool.fetchrow(
        "SELECT folder, status FROM replicas WHERE replica_id = $1", replica_id
    )
    if row is None or row["status"] != "completed":
        raise Conflict(f"Replica {replica_id} is not a completed replica any more.")
    return Path(row["folder"]) / "model"


# --- the training job's steps (orchestrator.jobs.replica) ---------------------------------------


async def claim(pool: asyncpg.Pool, replica_id: str) -> ReplicaRow | None:
    """The replica to train, or None when it is finished, failed or deleted (nothing to do)."""
    row = await pool.fetchrow(
        """UPDATE replicas SET attempts = attempts + 1, training_progress = '0/100',
                  updated_at = now()
           WHERE replica_id = $1 AND status = 'started' AND deleted_at IS NULL
           RETURNING *""",
        replica_id,
    )
    return None if row is None else from_row(row)


async def record_consent(pool: asyncpg.Pool, replica_id: str, transcript: str) -> None:
    """Keep what was heard in the consent check, whether or not it was consent."""
    await pool.execute(
        "UPDATE replicas SET consent_transcript = $2, updated_at = now() WHERE replica_id = $1",
        replica_id,
        transcript,
    )


async def set_progress(pool: asyncpg.Pool, replica_id: str, percent: int) -> None:
    await pool.execute(
        """UPDATE replicas SET training_progress = $2, updated_at = now()
           WHERE replica_id = $1 AND status = 'started'""",
        replica_id,
        f"{percent}/100",
    )


async def finish(pool: asyncpg.Pool, replica_id: str, notify: Notify | None = None) -> None:
    await pool.execute(
        """UPDATE replicas SET status = 'completed', training_progress = '100/100',
                  error_message = NULL, updated_at = now()
           WHERE replica_id = $1""",
        replica_id,
    )
    if notify is not None:  # webhook: completed
        await notify.changed(pool, "replica", replica_id)


async def fail(
    pool: asyncpg.Pool, replica_id: str, reason: str, notify: Notify | None = None
) -> None:
    await pool.execute(
        """UPDATE replicas SET status = 'error', error_message = $2, updated_at = now()
           WHERE replica_id = $1 AND status = 'started'""",
        replica_id,
        reason,
    )
    if notify is not None:  # webhook: error
        await notify.changed(pool, "replica", replica_id)
