"""Cloned synthesis as a service: the logic behind Triton's `voice` and `voice_stream` models.

A request names a voice profile's folder (`VOICE`, an absolute path, as `talking_head` names a
replica's) and the text to speak. Each model instance keeps, per voice, the loaded profile
(numpy arrays: statistics, kNN pool) and an ONNX Runtime session of its `voice.onnx` (the
conversion's MLP) in LRU caches keyed by file (path + inode, mtime and size), so a retrained
voice is reloaded on its next request and memory stays bounded however many voices exist. The
base voices (Piper "joe" on ONNX Runtime, Festival "slt" in one long-lived process) run
in-process and are shared by every voice built on them. The speech itself is made by the same
code as in-process synthesis (`clone.ClonedVoice`), with the MLP run by the cached session.

Never imports Triton: `model_repository/voice*/1/model.py` adapt it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from doppel.errors import InvalidRequest
from doppel.platform.sessions import SessionCache, file_stamp
from doppel.voice import base_voices, mapping
from doppel.voice.clone import ClonedVoice, CloneSettings
from doppel.voice.profile import CONVERSION_NPZ, PROFILE_JSON, VOICE_ONNX, VoiceProfile
from doppel.voice.tts import SentenceAudio, Speech

#: Voices each model instance keeps loaded (config `max_replicas`; env `DOPPEL_REPLICA_CACHE`
#: or `DOPPEL_REPLICA_CACHE_VOICE` replaces it): a profile is ~1-3 MB of arrays plus a 0.5 MB
#: graph.
DEFAULT_CAPACITY = 16
_TRAIN_HINT = "python -m doppel voice train AUDIO_OR_VIDEO --out DIR"


def voice_folder(value: Any) -> Path:
    """The profile folder a request's VOICE tensor names, checked: an `InvalidRequest` that
    says what is wrong (none given, relative, no such folder, not a profile, no `voice.onnx`).
    """
    if value is not None and not isinstance(value, str | bytes | os.PathLike):
        items = list(np.asarray(value, dtype=np.object_).reshape(-1))
        if len(items) > 1:
            raise InvalidRequest(f"VOICE must name one voice folder, not {len(items)}")
        value = items[0] if items else None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"The voice folder is not valid UTF-8 ({exc}).") from None
    text = "" if value is None else os.fspath(value)
    if not text.strip():
        raise InvalidRequest(
            "No voice given: VOICE must be the absolute folder of a trained voice profile."
        )
    folder = Path(text)
    if not folder.is_absolute():
        raise InvalidRequest(
            f"The voice folder {text!r} is a relative path; give the profile's absolute folder."
        )
    if not folder.is_dir():
        raise InvalidRequest(f"The voice folder {folder} does not exist (or is not a folder).")
    if not (folder / PROFILE_JSON).is_file():
        raise InvalidRequest(
            f"{folder} is not a voice profile (it has no {PROFILE_JSON}): train one with "
            f"`{_TRAIN_HINT}`."
        )
    if not (folder / VOICE_ONNX).is_file():
        raise InvalidRequest(
            f"The voice profile {folder} has no {VOICE_ONNX} (it was saved before voices were "
            f"served): run `python -m doppel voice export {folder}` or train it again."
        )
    return folder


def text_of(value: Any) -> str:
    """The text of a request's TEXT tensor (bytes or str, first element); "" when absent."""
    if value is None:
        return ""
    if not isinstance(value, str | bytes):
        items = list(np.asarray(value, dtype=np.object_).reshape(-1))
        value = items[0] if items else ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"The text is not valid UTF-8 ({exc}).") from None
    return str(value)


def speech_timings(speech: Speech) -> dict[str, Any]:
    """The TIMINGS document of a whole utterance: `Speech.timings()` (sample_rate, words,
    sentences with their words and phonemes) plus every phoneme at the top level.
    """
    doc = speech.timings()
    doc["phonemes"] = [p for s in doc["sentences"] for p in s["phonemes"]]
    return doc


def encode_timings(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class ProfileCache(SessionCache):
    """Loaded profiles by folder, least recently used evicted beyond `capacity`; reloaded when
    `profile.json` or `conversion.npz` changed (a retrained voice).
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, loader=VoiceProfile.load)

    def get(self, folder: str | os.PathLike[str]) -> VoiceProfile:
        return super().get(folder)  # type: ignore[no-any-return]

    def _stamp_of(self, path: Path) -> Any:
        return (file_stamp(path / PROFILE_JSON), file_stamp(path / CONVERSION_NPZ))

    def _unreadable(self, path: Path, exc: OSError) -> Exception:
        return InvalidRequest(
            f"The voice profile {path} cannot be read ({exc.strerror or exc}): "
            f"train it again with `{_TRAIN_HINT}`."
        )

    def _unloadable(self, path: Path, exc: Exception) -> Exception:
        return InvalidRequest(f"The voice profile {path} cannot be loaded: {exc}")


class VoiceServer:
    """What one Triton model instance holds: the caches and the shared base voices."""

    def __init__(
        self,
        models_dir: Path,
        *,
        capacity: int = DEFAULT_CAPACITY,
        threads: int = 1,
        settings: CloneSettings | None = None,
        base_factory: Callable[[str, Path], base_voices.BaseVoice] = base_voices.by_name,
    ) -> None:
        self.models_dir = models_dir
        self.settings = settings or CloneSettings()
        self.sessions = SessionCache(capacity, threads=threads)
        self.profiles = ProfileCache(capacity)
        self._base_factory = base_factory
        self._bases: dict[str, base_voices.BaseVoice] = {}
        self._lock = threading.Lock()

    def base(self, name: str) -> base_voices.BaseVoice:
        """The base voice `name`, started once and shared by every voice built on it."""
        with self._lock:
            if name not in self._bases:
                self._bases[name] = self._base_factory(name, self.models_dir)
            return self._bases[name]

    def warm(self) -> dict[str, str]:
        """Start every base voice this machine has and speak a word with each, so a voice's
        first request does not pay for loading Piper or starting Festival. Returns what failed
        ({name: reason}); a base voice that fails here fails only the requests that need it.
        """
        import shutil

        names = [base_voices.PiperBase.name]
        if shutil.which("festival"):
            names.append(base_voices.FestivalBase.name)
        failed = {}
        for name in names:
            try:
                self.base(name).speak(["Hello."])
            except Exception as exc:
                with self._lock:
                    self._bases.pop(name, None)
                failed[name] = str(exc)
        return failed

    def voice(self, value: Any) -> ClonedVoice:
        """The cloned voice a request's VOICE names, from the caches (loaded on first use)."""
        folder = voice_folder(value)
        profile = self.profiles.get(folder)
        try:
            session = self.sessions.get(folder / VOICE_ONNX)
        except ValueError as exc:
            raise InvalidRequest(
                f"{exc} (export it again: `python -m doppel voice export {folder}`)"
            ) from None
        return ClonedVoice(
            profile,
            self.models_dir,
            self.settings,
            base=self.base(profile.base_voice),
            map_coded=mapping.onnx_mapper(session),
        )

    def say(self, voice: Any, text: Any) -> Speech:
        """The whole text in the voice (the base voice speaks every sentence in one call)."""
        cloned = self.voice(voice)
        return cloned.say(text_of(text))

    def stream(self, voice: Any, text: Any) -> Iterator[SentenceAudio]:
        """One sentence at a time, each timed from the start of the utterance; the request is
        checked (voice, text) before the first sentence is spoken.
        """
        cloned = self.voice(voice)
        words = text_of(text)
        cloned.sentences(words)  # empty or too long: fail before any audio
        return cloned.stream(words)

    def close(self) -> None:
        self.sessions.clear()
        self.profiles.clear()
        with self._lock:
            bases, self._bases = list(self._bases.values()), {}
        for base in bases:
            close = getattr(base, "close", None)
            if close is not None:
                close()
