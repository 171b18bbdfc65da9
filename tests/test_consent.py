"""Spoken consent (issue: replicas): the matcher on many phrasings, the statement route, a real
Obama clip that is not a consent statement ending `error` with what Whisper heard, and a
statement spoken by Triton's TTS that Whisper hears and the check accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from scipy.io import wavfile

from doppel.replica import consent, layout
from doppel.settings import Settings
from doppel.triton import TritonClient
from tests.conftest import Caller, shared_file

NAME = "Barack Obama"

ACCEPTED = [
    consent.statement(NAME),
    "I Barack Obama consent to Doppel creating an AI replica of my face and voice",
    "i, barak obama, consent to doppel creating an a.i. replica of my face and voice.",
    "My name is Barack Obama and I agree to have a digital twin made of me.",
    "I'm Barrack Obama. I give my permission for an avatar of my likeness.",
    "This is Barack Obama; I authorize the artificial intelligence clone of my voice.",
    "Hello! I, BARACK OBAMA, hereby give Doppel permission to create my AI replica.",
    "I, Barack Obamma, allow you to create an AI replica of me.",
    "Um, so, I'm Barack Obama and, uh, I consent to this A.I. replica being made.",
]
REJECTED = [
    ("", "no speech"),
    ("   ", "no speech"),
    ("But here's the thing: we have the answers to these problems.", "missing"),
    ("I, Barack Obama, consent to this interview.", "AI replica"),
    ("I consent to Doppel creating an AI replica of my face and voice.", "name"),
    ("I, Joe Biden, consent to Doppel creating an AI replica of my face and voice.", "name"),
    ("I, Barack, consent to Doppel creating an AI replica of my face and voice.", "name"),
    ("I, Barack Obama, want an AI replica of my face and voice.", "I consent"),
    ("I, Barack Obama, do not consent to an AI replica of my face.", "refuses"),
    ("I, Barack Obama, don't agree to any AI replica.", "refuses"),
    ("I Barack Obama never authorize an AI clone.", "refuses"),
    ("I, Barack Obama, refuse to consent to an AI replica.", "refuses"),
]


@pytest.mark.parametrize("said", ACCEPTED)
def test_consent_phrasings_and_whisper_spellings_are_accepted(said: str) -> None:
    ok, reason = consent.check(said, NAME)
    assert ok, (said, reason)


@pytest.mark.parametrize(("said", "why"), REJECTED)
def test_speech_that_is_not_consent_is_refused_with_the_reason(said: str, why: str) -> None:
    ok, reason = consent.check(said, NAME)
    assert not ok and why in reason, (said, reason)


def test_the_failure_message_quotes_what_was_heard_and_what_to_say() -> None:
    heard = "But here's the thing: we have the answers to these problems."
    message = consent.failure_message(heard, NAME, consent.check(heard, NAME)[1])
    assert message.startswith("Consent not verified")
    assert f'we heard "{heard}"' in message
    assert consent.statement(NAME) in message and "consent_video" in message
    long = consent.failure_message("word " * 500, NAME, "missing a name")
    assert "…" in long and len(long) < 700
    assert "we heard no speech" in consent.failure_message("", NAME, "no speech was heard")
    assert consent.normalise("Don’t, A.I.-made!") == "don t a i made"


async def test_the_statement_route_gives_the_sentence_to_show(
    client: AsyncTestClient, caller: Caller
) -> None:
    got = await client.get(
        "/v2/replicas/consent-statement",
        params={"name": "  Ada   Lovelace "},
        headers=caller.headers,
    )
    assert got.status_code == 200, got.text
    assert got.json() == {
        "statement": "I, Ada Lovelace, consent to Doppel creating an AI replica of my face and "
        "voice."
    }
    assert consent.check(got.json()["statement"], "Ada Lovelace")[0]
    blank = await client.get(
        "/v2/replicas/consent-statement", params={"name": "   "}, headers=caller.headers
    )
    assert blank.status_code == 422 and "name" in blank.json()["detail"]
    missing = await client.get("/v2/replicas/consent-statement", headers=caller.headers)
    assert missing.status_code == 400 and "name" in missing.text


@pytest.mark.data
async def test_a_training_video_without_consent_ends_in_error_quoting_the_transcript(
    client: AsyncTestClient, caller: Caller, pool: Any, settings: Settings
) -> None:
    from tests.test_replicas_videos import run_worker

    clip = shared_file("talking", "obama", "obama_sent_01.mp4")
    response = await client.post(
        "/v2/replicas",
        files={"train_video": ("obama.mp4", clip.read_bytes(), "video/mp4")},
        data={"replica_name": NAME},
        headers=caller.headers,
    )
    assert response.status_code == 200, response.text
    rid = response.json()["replica_id"]
    worker = await run_worker(settings)
    assert worker.jobs_failed == 0
    body = (await client.get(f"/v2/replicas/{rid}", headers=caller.headers)).json()
    assert body["status"] == "error", body
    row = await pool.fetchrow("SELECT * FROM replicas WHERE replica_id = $1", rid)
    heard = row["consent_transcript"]
    print("Whisper heard:", heard)
    assert "big ideas" in heard.lower() and "solutions" in heard.lower()
    message = body["error_message"]
    assert message.startswith("Consent not verified") and f'"{heard}"' in message
    assert consent.statement(NAME) in message
    # Training never started: no model was written, progress did not move.
    assert not (Path(row["folder"]) / layout.MODEL_FOLDER).exists()
    assert body["training_progress"] == "0/100"


async def consent_clip(triton: TritonClient, name: str, dest: Path, video: bool = True) -> Path:
    """`dest`: Triton's TTS saying the consent statement for `name`, as a WAV or muxed over a
    black picture as an MP4 (a consent video the API accepts).
    """
    speech, _ = await triton.synthesize(consent.statement(name), noise_scale=0.0, noise_w=0.0)
    wav = dest.with_suffix(".wav")
    await asyncio.to_thread(wavfile.write, wav, speech.rate, speech.samples)
    if not video:
        return wav
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "color=c=black:s=320x240:r=25", "-i", str(wav),
        "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dest),
    )  # fmt: skip
    assert await proc.wait() == 0
    return dest


@pytest.mark.parametrize("name", [NAME, "Obama"])  # "Obama": the consent of the trained fixture
async def test_a_spoken_statement_is_heard_and_accepted(
    settings: Settings, tmp_path: Path, name: str
) -> None:
    triton = TritonClient(settings.triton_grpc_url)
    try:
        mp4 = await consent_clip(triton, name, tmp_path / "consent.mp4")
        ok, heard, message = await consent.verify(triton, mp4, name)
        print("Whisper heard:", heard)
        assert ok, message
        assert "consent" in heard.lower() and message == ""
        # The same recording does not consent for someone else.
        other_ok, _, other = await consent.verify(triton, mp4, "Ada Lovelace")
        assert not other_ok and "the name 'Ada Lovelace'" in other and heard in other
    finally:
        await triton.close()
