"""Voice cloning quality on held-out sentences (shared/docs/quality.md, issue 5).

Two targets, each trained on at most 60 s of real speech with the product's own path
(`doppel.voice.profile.train`):
- LJ Speech (female): trained on LJ001-0009..0016 (56 s, Whisper transcripts); the reference
  centroid is the held-out real clips LJ001-0021..0032; the ten sentences spoken are the
  metadata.csv lines (LJ001-0001..0008, never trained on) and Whisper's transcripts of LJ001-0017
  and 0018.
- Obama (male): trained on five clips' audio with their manifest.csv transcripts; the centroid is
  the three other clips with audio; the sentences are ten from the weekly address captions.

For each: the ceiling, the similarity of the target's own training clips to the centroid (as
recorded, and resynthesised by WORLD, the vocoder every cloned clip goes through); similarity
(resemblyzer cosine to the centroid) of the base voice and of the cloned voice, Whisper base
(beam 5) WER of both, real-time factor of synthesis + conversion, and consistency (mean cosine
between the cloned sentences). Writes benchmarks/results/voice.md.

Run: `OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python -m benchmarks.quality.voice`
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from doppel.audio.stt import SpeechToText, SttOptions
from doppel.platform import weights
from doppel.settings import REPO_ROOT, default_cache_dir
from doppel.voice import enrol, learning, validate, world
from doppel.voice.clone import ClonedVoice
from doppel.voice.profile import train

DATA = Path(os.environ.get("DOPPEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "voice.md"
GOALS = {"similarity": 0.80, "wer": 0.10, "rtf": 0.2, "consistency": 0.85}


@dataclasses.dataclass
class Target:
    name: str
    train: list[Path]
    transcripts: list[str] | None
    reference: list[Path]
    sentences: list[str]


@dataclasses.dataclass
class Row:
    target: str
    train_speech_s: float
    train_time_s: float
    #: The target's own training clips: as recorded, and through WORLD analysis + synthesis.
    real_similarity: float
    resynth_similarity: float
    base_voice: str
    base_similarity: float
    base_wer: float
    similarity: float
    wer: float
    raw_wer: float
    rtf: float
    consistency: float


def normalised_words(text: str) -> list[str]:
    """Words after Whisper's own English normaliser (openai-whisper's EnglishTextNormalizer,
    what Whisper's published WERs use): "fifteenth" and "15th", "forty-two" and "42" are one
    word, so a number read correctly is not an error."""
    return _normaliser()(text).split()


@functools.cache
def _normaliser() -> Any:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def wer(reference: str, hypothesis: str, *, normalise: bool = True) -> tuple[int, int]:
    """(word edits, reference words), by default after Whisper's normaliser."""
    split = normalised_words if normalise else validate.words
    r = split(reference)
    return validate.word_edits(r, split(hypothesis)), len(r)


def lj_target(stt: SpeechToText) -> Target:
    root = DATA / "speech" / "ljspeech"
    wav = lambda n: root / "wavs" / f"LJ001-{n:04d}.wav"  # noqa: E731
    with (root / "metadata.csv").open(encoding="utf-8") as f:
        meta = [row[2] for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)]
    extra = [stt.transcribe(enrol.load([wav(n)])[0], language="en")["text"] for n in (17, 18)]
    return Target(
        "LJ Speech (female)",
        [wav(n) for n in range(9, 17)],
        None,
        [wav(n) for n in range(21, 33)],
        meta[:8] + extra,
    )


def obama_target() -> Target:
    root = DATA / "talking" / "obama"
    with (root / "manifest.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if "NO AUDIO" not in r["note"]]
    # Caption speaker labels are not spoken.
    text = {r["file"]: r["transcript"].replace("The President:", "").strip() for r in rows}
    train_files = [
        "obama_sent_01.mp4",
        "obama_sent_02.mp4",
        "obama_sent_03.mp4",
        "obama_sent_04.mp4",
        "obama_sent_09.mp4",
    ]
    ref_files = [r["file"] for r in rows if r["file"] not in train_files]
    return Target(
        "Obama (male)",
        [root / f for f in train_files],
        [text[f] for f in train_files],
        [root / f for f in ref_files],
        caption_sentences(root, 10),
    )


def caption_sentences(root: Path, count: int) -> list[str]:
    """Whole sentences of the weekly address captions, without numbers (read aloud, they
    differ from Whisper's digits for reasons that have nothing to do with the voice)."""
    vtt = (root / "weekly_address_payroll_tax_cut.en.vtt").read_text(encoding="utf-8")
    lines = [
        ln
        for ln in vtt.splitlines()
        if ln and "-->" not in ln and not ln.startswith(("WEBVTT", "Kind:", "Language:"))
    ]
    text = re.sub(r"\s+", " ", " ".join(lines).replace("The President:", "")).replace(" --", ",")
    sentences = re.split(r"(?<=[.!?])\s+", text)
    good = [s for s in sentences if not re.search(r"\d", s) and 6 <= len(s.split()) <= 30]
    return good[:count]


def evaluate(target: Target, models_dir: Path, stt: SpeechToText, work: Path) -> Row:
    encoder = enrol.SpeakerEncoder()
    centroid = np.mean([encoder.embed(c) for c in enrol.load(target.reference)], axis=0)
    centroid /= np.linalg.norm(centroid)
    clips = enrol.load(target.train)
    print(f"== {target.name}: training on {sum(len(c) for c in clips) / 16000:.1f} s", flush=True)
    real = [float(encoder.embed(c) @ centroid) for c in clips]
    resynth = [
        float(encoder.embed(world.synthesise(world.analyse(c)).astype(np.float32)) @ centroid)
        for c in clips
    ]
    print(f"  real training clips {np.round(real, 3)}, resynthesised {np.round(resynth, 3)}")
    started = time.perf_counter()
    profile = train(
        clips,
        models_dir,
        transcripts=target.transcripts,
        options=learning.TrainOptions(),
        progress=lambda m: print("  " + m, flush=True),
    )
    train_time = time.perf_counter() - started
    folder = work / re.sub(r"\W+", "_", target.name)
    profile.save(folder)
    voice = ClonedVoice.load(folder, models_dir)
    base_sims, sims, embs = [], [], []
    base_err, err, n_words, raw_err, raw_words = 0, 0, 0, 0, 0
    synth_s, audio_s = 0.0, 0.0
    for sentence in target.sentences:
        t0 = time.perf_counter()
        speech = voice.say(sentence)
        synth_s += time.perf_counter() - t0
        audio_s += len(speech.audio) / speech.sample_rate
        base = np.concatenate([b.audio for b in voice.base.speak(voice.sentences(sentence))])
        emb = encoder.embed(speech.audio)
        embs.append(emb)
        sims.append(float(emb @ centroid))
        base_sims.append(float(encoder.embed(base) @ centroid))
        heard = stt.transcribe(speech.audio, language="en", beam_size=5)["text"]
        heard_base = stt.transcribe(base, language="en", beam_size=5)["text"]
        e, n = wer(sentence, heard)
        eb, _ = wer(sentence, heard_base)
        er, nr = wer(sentence, heard, normalise=False)
        err, base_err, n_words = err + e, base_err + eb, n_words + n
        raw_err, raw_words = raw_err + er, raw_words + nr
        print(f"  {sims[-1]:.3f} (base {base_sims[-1]:.3f}) {e}/{n} {heard!r}", flush=True)
    pairs = [float(a @ b) for a, b in itertools.combinations(embs, 2)]
    return Row(
        target.name,
        profile.speech_s,
        train_time,
        float(np.mean(real)),
        float(np.mean(resynth)),
        profile.base_voice,
        float(np.mean(base_sims)),
        base_err / n_words,
        float(np.mean(sims)),
        err / n_words,
        raw_err / raw_words,
        synth_s / audio_s,
        float(np.mean(pairs)),
    )


def report(rows: list[Row]) -> str:
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out = [
        "# Voice cloning: held-out sentences",
        "",
        "`python -m benchmarks.quality.voice` (benchmarks/quality/voice.py). Similarity is the",
        "resemblyzer cosine to the centroid of held-out real clips; WER is Whisper base, beam 5,",
        "pooled over ten sentences, after Whisper's English normaliser (numbers read as words",
        "match digits); raw WER compares lower-cased words without it. RTF is synthesis +",
        "conversion seconds per second of audio on",
        "this machine (2 shared CPU cores, one thread). Goals: similarity >= "
        f"{GOALS['similarity']},",
        f"WER <= {GOALS['wer']:.0%}, RTF <= {GOALS['rtf']}, consistency >= {GOALS['consistency']}.",
        "The ceiling: the target's own training clips against the same centroid, as recorded",
        "(real) and through WORLD analysis and synthesis (resynth), the vocoder every cloned clip",
        "goes through.",
        "",
        "| target | speech trained on (s) | training time (s) | real | resynth | base voice | "
        "base similarity | base WER | cloned similarity | cloned WER | cloned raw WER | RTF | "
        "consistency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.target} | {r.train_speech_s:.1f} | {r.train_time_s:.0f} | "
            f"{r.real_similarity:.3f} | {r.resynth_similarity:.3f} | {r.base_voice} | "
            f"{r.base_similarity:.3f} | {r.base_wer:.3f} | {r.similarity:.3f} "
            f"({mark(r.similarity >= GOALS['similarity'])}) | {r.wer:.3f} "
            f"({mark(r.wer <= GOALS['wer'])}) | {r.raw_wer:.3f} | "
            f"{r.rtf:.3f} ({mark(r.rtf <= GOALS['rtf'])}) | "
            f"{r.consistency:.3f} ({mark(r.consistency >= GOALS['consistency'])}) |"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    import tempfile

    import torch

    torch.set_num_threads(1)
    models_dir = Path(os.environ.get("DOPPEL_MODELS_DIR", default_cache_dir(os.environ) / "models"))
    stt = SpeechToText(weights.model_dir(models_dir, "whisper-base"), SttOptions(cpu_threads=1))
    which = sys.argv[1:] or ["lj", "obama"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="doppel-voice-bench-") as tmp:
        if "lj" in which:
            rows.append(evaluate(lj_target(stt), models_dir, stt, Path(tmp)))
        if "obama" in which:
            rows.append(evaluate(obama_target(), models_dir, stt, Path(tmp)))
    text = report(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
