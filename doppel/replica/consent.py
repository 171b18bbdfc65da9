"""Spoken consent: before a user's replica is trained, the person must be heard saying that they
agree to an AI replica of themselves being made, with their name.

The consent video (or, without one, the training video) is transcribed by Whisper through
Triton and the transcript is matched tolerantly (`check`): people paraphrase and Whisper
misspells names, so the match asks for three ideas rather than the exact sentence of
`statement`: a consent phrase, an AI-replica notion and every word of the name (fuzzily). A
failure quotes what was heard, so the person can see why and record again.

The phrases are English ones; Whisper detects the language, so a statement in another
language is quoted back untranslated and fails. Replicas an operator makes from the CLI
(`replica_type = 'system'`) skip the check.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from doppel.audio import media
from doppel.triton import TritonClient

#: Only the start of the recording is transcribed: the statement comes first, and one Whisper
#: window (30 s) keeps the check to a single inference.
LISTEN_S = 30.0
#: difflib ratio at which a transcript word counts as a name word ("Barack" / "Barak" = 0.91,
#: "Obama" / "Osama" = 0.8, "Smith" / "Smyth" = 0.8).
NAME_RATIO = 0.8
#: Longest quote of the transcript in a failure message.
QUOTE_CHARS = 300

# Phrases on normalised text (lowercase, punctuation gone, single spaces), as whole words.
_CONSENT = re.compile(
    r"\b(consent|consents|consenting|agree|agrees|"
    r"give (my |you |doppel )*(full )?permission|grant (my |you )*(full )?permission|"
    r"authori[sz]e|authori[sz]ing|allow|allowing)\b"
)
_REPLICA = re.compile(
    r"\b(ai|a i|artificial intelligence|replica|replicas|clone|cloned|cloning|"
    r"digital (twin|double|version|copy)|avatar|likeness)\b"
)
# "I do not consent", "I don't agree", "I never authorise": a refusal is not consent.
_REFUSAL = re.compile(
    r"\b(not|never|don t|doesn t|refuse|withdraw)\s+(\w+\s+){0,2}?"
    r"(consent|agree|allow|authori[sz]e|give|grant)"
)


def statement(name: str) -> str:
    """The sentence a person says to consent (a web app shows it before the upload)."""
    return f"I, {name.strip()}, consent to Doppel creating an AI replica of my face and voice."


def normalise(text: str) -> str:
    """Lowercase words without punctuation: "I, Barack Obama, consent." -> "i barack obama
    consent". Apostrophes go too ("don't" -> "don t"), hyphens split words.
    """
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def _name_word_heard(word: str, heard: list[str]) -> bool:
    return any(difflib.SequenceMatcher(None, word, h).ratio() >= NAME_RATIO for h in heard)


def check(transcript: str, name: str) -> tuple[bool, str]:
    """Whether `transcript` is `name`'s consent; the reason names what is missing when not."""
    said = normalise(transcript)
    if not said:
        return False, "no speech was heard"
    missing: list[str] = []
    if _REFUSAL.search(said):
        return False, "the statement refuses consent"
    if not _CONSENT.search(said):
        missing.append("the words 'I consent'")
    if not _REPLICA.search(said):
        missing.append("that it is for an AI replica")
    heard = said.split()
    name_words = normalise(name).split()
    absent = [w for w in name_words if not _name_word_heard(w, heard)]
    if not name_words:
        missing.append("a name")
    elif absent:
        missing.append(f"the name {name.strip()!r}")
    if missing:
        listed = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        return False, "missing " + listed
    return True, "consent heard"


def quote(transcript: str) -> str:
    text = " ".join(transcript.split())
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1].rstrip() + "…"


def failure_message(transcript: str, name: str, reason: str) -> str:
    """The replica's error message: what was heard, why it is not consent, what to record."""
    heard = f'we heard "{quote(transcript)}"' if transcript.strip() else "we heard no speech"
    return (
        f"Consent not verified ({reason}): {heard}. Record yourself saying: "
        f'"{statement(name)}" (in the training video or as consent_video) and try again.'
    )


async def listen(triton: TritonClient, path: Path) -> str:
    """The transcript of the first `LISTEN_S` seconds of `path`'s audio ("" when silent).

    A file without an audio track raises `InvalidMedia`; Triton being down raises
    `ServiceUnavailable` (the job is retried).
    """
    audio = await media.decode_audio(path)
    head = media.Audio(samples=audio.samples[: int(LISTEN_S * audio.rate)], rate=audio.rate)
    if head.duration_s < media.MIN_DURATION_S or head.rms_dbfs < media.SILENCE_DBFS:
        return ""
    doc = await triton.transcribe(head)
    return str(doc.get("text", "")).strip()


async def verify(triton: TritonClient, path: Path, name: str) -> tuple[bool, str, str]:
    """Listen to `path` and check it for `name`'s consent: (ok, transcript, message), the
    message being the replica's error when not ok.
    """
    transcript = await listen(triton, path)
    ok, reason = check(transcript, name)
    return ok, transcript, "" if ok else failure_message(transcript, name, reason)
