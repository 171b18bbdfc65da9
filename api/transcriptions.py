"""`/v2/transcriptions`: speech-to-text on an uploaded file, answered at once or as a job."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter

from api.state import Services
from doppel.audio import media
from doppel.domain import transcriptions
from doppel.domain.tenants import Tenant
from doppel.errors import InvalidMedia, InvalidRequest


@dataclasses.dataclass
class TranscriptionForm:
    #: The audio (or video) file, in any format ffmpeg reads.
    file: UploadFile
    #: ISO 639-1 code ("en"); detected when omitted.
    language: str | None = None


class Segment(msgspec.Struct):
    start: float
    end: float
    text: str


class TranscriptionOut(msgspec.Struct, omit_defaults=True):
    transcription_id: uuid.UUID
    status: str
    created_at: dt.datetime
    text: str | None = None
    language: str | None = None
    duration_s: float | None = None
    segments: list[Segment] | None = None
    error: str | None = None
    completed_at: dt.datetime | None = None


def _out(item: transcriptions.Transcription) -> TranscriptionOut:
    doc: dict[str, Any] = item.result or {}
    segments = doc.get("segments")
    return TranscriptionOut(
        transcription_id=item.id,
        status=item.status,
        created_at=item.created_at,
        text=doc.get("text"),
        language=doc.get("language") or item.language,
        duration_s=doc.get("duration_s", item.duration_s),
        segments=[Segment(s["start"], s["end"], s["text"]) for s in segments]
        if segments is not None
        else None,
        error=item.error,
        completed_at=item.completed_at,
    )


async def _decode_upload(data: bytes) -> media.Audio:
    """Decode an uploaded file and check it is worth transcribing (raises `InvalidMedia`)."""
    if not data:
        raise InvalidMedia("The uploaded file is empty.")
    audio = await media.decode_audio(data)
    media.require_speech_candidate(audio)
    return audio


class TranscriptionController(Controller):
    path = "/transcriptions"
    tags = ["transcriptions"]

    @post(
        "/",
        operation_id="create_transcription",
        summary="Transcribe an audio or video file",
        description="Synchronous by default (200 with the transcript). With `async=true` the "
        "file is queued and the answer is `202 {transcription_id, status}`; poll "
        "`GET /v2/transcriptions/{id}`.",
        status_code=200,
    )
    async def create(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        data: Annotated[TranscriptionForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        run_async: Annotated[
            bool, QueryParameter(name="async", description="queue the work and answer 202 at once")
        ] = False,
    ) -> Response[TranscriptionOut]:
        tenant = request.user
        if not isinstance(data.file, UploadFile):
            raise InvalidRequest("Send the audio as a multipart form field named 'file'.")
        raw = await data.file.read()
        language = (data.language or "").strip().lower() or None
        if language is not None and not (2 <= len(language) <= 3 and language.isalpha()):
            raise InvalidRequest(
                f"language must be an ISO 639-1 code such as 'en', not {language!r}."
            )
        audio = await _decode_upload(raw)
        if run_async:
            item = await transcriptions.enqueue(
                services.pool,
                services.redis,
                services.storage,
                tenant.id,
                data.file.filename,
                raw,
                audio.duration_s,
                language,
            )
            return Response(_out(item), status_code=202)
        # Answered while the caller waits: transcribed here, recorded like a queued one.
        doc = await services.triton.transcribe(audio, language=language)
        item = await transcriptions.record_completed(
            services.pool, tenant.id, data.file.filename, audio.duration_s, doc
        )
        return Response(_out(item), status_code=200)

    @get(
        "/{transcription_id:uuid}",
        operation_id="get_transcription",
        summary="A transcription's status and, once completed, its transcript",
    )
    async def fetch(
        self,
        request: Request[Tenant, uuid.UUID, Any],
        services: NamedDependency[Services],
        transcription_id: FromPath[uuid.UUID],
    ) -> TranscriptionOut:
        return _out(await transcriptions.get(services.pool, request.user.id, transcription_id))
