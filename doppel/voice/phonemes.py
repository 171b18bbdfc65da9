"""Piper phonemes for a sentence: espeak-ng IPA mapped to a voice's phoneme ids, each phoneme
tagged with the word it voices (so the model's per-phoneme durations give word timings).

The `espeak-ng` program is called (not linked): Piper's own runtime is GPL, and only its id
scheme is followed here (BOS, then each phoneme followed by PAD, then EOS; clause punctuation is a
phoneme).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import subprocess
import unicodedata
from collections.abc import Sequence

PAD, BOS, EOS = "_", "^", "$"
CLAUSE_PUNCT = ",;:"
SENTENCE_PUNCT = ".!?"
CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def split_clauses(sentence: str) -> list[tuple[str, str]]:
    """(clause text without its final punctuation, that punctuation or "") for one sentence."""
    out = []
    for part in CLAUSE_END.split(sentence):
        part = part.strip()
        stripped = part.rstrip(CLAUSE_PUNCT + SENTENCE_PUNCT + "\"') ")
        tail = part[len(stripped) :]
        punct = next((c for c in reversed(tail) if c in CLAUSE_PUNCT + SENTENCE_PUNCT), "")
        if speakable(stripped):
            out.append((stripped, punct))
        elif out and punct and not out[-1][1]:
            out[-1] = (out[-1][0], punct)
    return out


def words_of(clause: str) -> list[str]:
    """The clause's spoken words: whitespace tokens without surrounding punctuation."""
    words = (w.strip("\"'()!?.,;:-") for w in clause.split())
    return [w for w in words if speakable(w)]


# ---- phonemes ---------------------------------------------------------------------------------
def espeak_ipa(items: Sequence[str], voice: str) -> list[str]:
    """IPA for each item, from one `espeak-ng` run (items as paragraphs, so answers separate).

    Falls back to one run per item if espeak's paragraphs do not line up with the items.
    """
    if not items:
        return []
    out = _run_espeak("\n\n".join(items), voice)
    paragraphs = [p for p in re.split(r"\n\s*\n", out.strip("\n"))]
    if len(paragraphs) != len(items):
        paragraphs = [_run_espeak(item, voice) for item in items]
    return [" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs]


def _run_espeak(text: str, voice: str) -> str:
    try:
        proc = subprocess.run(
            ["espeak-ng", "-q", "-v", voice, "--ipa", "-b", "1"],
            input=text.encode(),
            capture_output=True,
            check=True,
            timeout=60,
        )
    except FileNotFoundError as exc:  # pragma: no cover - bootstrap installs it
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)") from exc
    return proc.stdout.decode("utf-8")


@dataclasses.dataclass(frozen=True)
class Phonemized:
    """One sentence as Piper phonemes, and which word (index into `words`) each one voices."""

    phonemes: list[str]
    owners: list[int | None]
    words: list[str]


def phonemize_sentence(sentence: str, voice: str) -> Phonemized:
    """Piper's phoneme sequence for one sentence, each phoneme tagged with its word."""
    clauses = split_clauses(sentence)
    clause_words = [words_of(text) for text, _ in clauses]
    flat_words = [w for ws in clause_words for w in ws]
    ipa = espeak_ipa([t for t, _ in clauses] + flat_words, voice)
    clause_ipa, word_ipa = ipa[: len(clauses)], ipa[len(clauses) :]
    phonemes: list[str] = []
    owners: list[int | None] = []
    first_word = 0
    for (_, punct), ipa_text, words in zip(clauses, clause_ipa, clause_words, strict=True):
        chars = list(unicodedata.normalize("NFD", ipa_text))
        mine = word_ipa[first_word : first_word + len(words)]
        owned = _assign_words(chars, mine)
        phonemes += chars
        owners += [None if o is None else first_word + o for o in owned]
        if punct:
            # As Piper: the terminator is a phoneme; clause punctuation is followed by a space.
            extra = [punct, " "] if punct in CLAUSE_PUNCT else [punct]
            phonemes += extra
            owners += [None] * len(extra)
        first_word += len(words)
    while phonemes and phonemes[-1] == " ":
        phonemes.pop()
        owners.pop()
    return Phonemized(phonemes, owners, flat_words)


def _assign_words(chars: list[str], word_ipa: list[str]) -> list[int | None]:
    """Which word each phoneme character of a clause belongs to (None for spaces).

    espeak joins some words in context ("of the" -> "ʌvðə") and may read one token as several
    ("1984"), so words are matched by aligning each word's own IPA against the clause's.
    """
    ref: list[str] = []
    ref_owner: list[int] = []
    for i, w in enumerate(word_ipa):
        for c in unicodedata.normalize("NFD", w):
            if not c.isspace():
                ref.append(c)
                ref_owner.append(i)
    positions = [i for i, c in enumerate(chars) if not c.isspace()]
    seq = [chars[i] for i in positions]
    owner_of: list[int | None] = [None] * len(seq)
    if ref:
        matcher = difflib.SequenceMatcher(None, ref, seq, autojunk=False)
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            if tag in ("equal", "replace"):
                for k in range(b1 - b0):
                    a = a0 + min(k * (a1 - a0) // max(b1 - b0, 1), a1 - a0 - 1)
                    owner_of[b0 + k] = ref_owner[a]
    # Unmatched characters join the word before (or after, at the start); owners never go back.
    last: int | None = next((o for o in owner_of if o is not None), None)
    for k, o in enumerate(owner_of):
        if o is None or (last is not None and o < last):
            owner_of[k] = last
        else:
            last = o
    out: list[int | None] = [None] * len(chars)
    for pos, o in zip(positions, owner_of, strict=True):
        out[pos] = o
    return out


def phoneme_ids(
    phonemes: Sequence[str], id_map: dict[str, list[int]]
) -> tuple[list[int], list[int]]:
    """Piper's ids (BOS PAD, each phoneme then PAD, EOS), and each phoneme's first id index.

    The index is -1 for a phoneme the voice does not know (Piper skips those too).
    """
    ids = [*id_map[BOS], *id_map[PAD]]
    first: list[int] = []
    for p in phonemes:
        if p not in id_map:
            first.append(-1)
            continue
        first.append(len(ids))
        ids += [*id_map[p], *id_map[PAD]]
    ids += id_map[EOS]
    return ids, first
