"""Replica training: from a person's training video(s) to the folder that renders them
(`doppel.replica.layout`), as named steps.

`train` runs them in order: `prepare` (join the clips, check and track the video), `load_audio`
and `features` (the lip-sync audio features), side by side with them (`Concurrent`)
`learn_voice` (a child process), then `adapt_mouth` and `train_renderer` (crop its inputs,
train it, export and quantize it), then `write_bank` (the render-time references) and `finish`
(replica.json).

Progress leaves as typed `Progress(stage, done, total)` values through `progress` (the stages
are this module's `STAGE_*` names); what a person reads goes to `logging`.

Inference never happens here except through the callables passed in (`encode`, `vad`), so the
CLI and workers run the Triton models and tests may run the same graphs in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from doppel.errors import InvalidTrainingVideo, Stopped
from doppel.face import mouth, regions, renderer, video
from doppel.face import prepare as prep
from doppel.platform.progress import Progress, Report, ignore
from doppel.replica import layout, voice_child
from doppel.replica.artefact import Bank, Replica, Source, source_boxes
from doppel.replica.concurrent import Concurrent
from doppel.replica.onnx import export_mouth, export_renderer, quantize_renderer
from doppel.settings import REPO_ROOT

if TYPE_CHECKING:
    from doppel.audio.features import Encode
    from doppel.settings import Settings

log = logging.getLogger(__name__)

GENERIC_MOUTH = REPO_ROOT / "doppel" / "assets" / "mouth_generic.pt"
#: Bank size cap: enough shapes for retrieval, bounded disk (JPEG crops, ~10 KB each).
MAX_BANK = 1500
#: Mouth-model clips longer than this are cut into pieces (the fold calibration needs several).
CLIP_S = 10.0

#: The stages `train` reports, in order (`Progress.stage`), besides those of the steps it calls:
#: prep.STAGE ("prepare", counting prep.PREPARE_STEPS), renderer.STAGE_INPUTS ("renderer
#: inputs", counting frames) and renderer.STAGE ("renderer", counting training steps). These are
#: reported once, when reached ("mouth" and "voice" when done).
STAGE_JOIN = "join"
STAGE_FEATURES = "features"
STAGE_MOUTH = "mouth"
STAGE_VOICE = "voice"
STAGE_CROP = "crop"
STAGE_READY = "ready"


@dataclasses.dataclass
class TrainOptions:
    prepare: prep.PrepareOptions = dataclasses.field(default_factory=prep.PrepareOptions)
    renderer: renderer.TrainConfig = dataclasses.field(default_factory=renderer.TrainConfig)
    mouth_steps: int = 400
    threads: int = 2
    #: Learn the person's voice too (doppel.voice; needs `models_dir` for Whisper and the base
    #: voices). A replica is a face and a voice; tests of the face alone turn it off.
    voice: bool = True
    voice_options: Any = None  # doppel.voice.learning.TrainOptions; None: its defaults
    models_dir: Path | None = None
    #: Triton gRPC address whose `stt` model the voice hears its speech with (the platform's
    #: Whisper); None: Whisper in the voice's own process.
    stt_url: str | None = None

    @classmethod
    def make(
        cls,
        *,
        stt_url: str | None,
        models_dir: Path | None = None,
        renderer_steps: int | None = None,
        mouth_steps: int | None = None,
        voice_epochs: int | None = None,
        voice: bool = True,
    ) -> TrainOptions:
        """The defaults with the overrides given (None: keep the default); the worker's
        (`from_settings`) and the CLI's options are made here.
        """
        options = cls(models_dir=models_dir, stt_url=stt_url, voice=voice)
        if renderer_steps:
            options.renderer.steps = renderer_steps
        if mouth_steps:
            options.mouth_steps = mouth_steps
        if voice_epochs:
            from doppel.voice.learning import TrainOptions as VoiceOptions

            options.voice_options = VoiceOptions(epochs=voice_epochs, align_passes=1)
        return options

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainOptions:
        """The platform's options: its models, its Triton's Whisper, and the test/trial
        overrides DOPPEL_RENDERER_STEPS, DOPPEL_MOUTH_STEPS, DOPPEL_VOICE_EPOCHS.
        """
        return cls.make(
            stt_url=settings.triton_grpc_url,
            models_dir=settings.models_dir,
            renderer_steps=settings.renderer_steps,
            mouth_steps=settings.mouth_steps,
            voice_epochs=settings.voice_epochs,
        )


async def train(
    sources: Sequence[Path],
    out: Path,
    *,
    encode: Encode,
    vad: prep.SpeechProbabilities,
    options: TrainOptions | None = None,
    progress: Report = ignore,
) -> Replica:
    """Train a replica from one or more videos of one person into the folder `out`."""
    return await _Training(list(sources), out, encode, vad, options or TrainOptions(), progress)()


class _Training:
    """One replica being trained: its steps in order, and what each hands to the next."""

    def __init__(
        self,
        sources: list[Path],
        out: Path,
        encode: Encode,
        vad: prep.SpeechProbabilities,
        opts: TrainOptions,
        report: Report,
    ) -> None:
        self.sources, self.out, self.encode, self.vad = sources, out, encode, vad
        self.opts, self.report = opts, report
        self.work = out / layout.WORK
        self.timings: dict[str, float] = {}
        self.start = self.clock = time.perf_counter()
        self.jobs = Concurrent()
        self.mouth_done = threading.Event()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.clock, 2)
        self.clock = now

    async def __call__(self) -> Replica:
        import torch

        torch.set_num_threads(self.opts.threads)
        await self.prepare()
        await self.load_audio()
        jobs = self.jobs
        # The voice needs only the audio: it starts now, in its own process on one core, and
        # the face steps share the rest (`Concurrent`).
        try:
            if self.opts.voice:
                jobs.start("voice", self.learn_voice())
            await self.features()
            jobs.start("mouth", jobs.thread(self.adapt_mouth))
            # Timed inside: crop_s and renderer_s.
            jobs.start("renderer", self.train_renderer(), timed=False)
            done = await jobs.wait()
        except BaseException:
            await jobs.abandon()
            raise
        self.timings.update(jobs.seconds)
        self.lap("concurrent_s")
        data, stats = done["renderer"]
        self.write_bank(data)
        self.lap("bank_s")
        return self.finish(done["mouth"], stats, done.get("voice"))

    async def prepare(self) -> None:
        """Join the clips (several), then check, normalise and track the video."""
        await asyncio.to_thread(self.work.mkdir, parents=True, exist_ok=True)
        self.infos = [video.probe(p) for p in self.sources]
        if len(self.sources) == 1:
            self.joined = Path(self.sources[0])
        else:
            log.info("joining %d clips", len(self.sources))
            self.report(Progress(STAGE_JOIN))
            for info in self.infos:
                if not info.has_audio:
                    raise InvalidTrainingVideo(
                        f"{info.path.name} has no audio track. Every training clip needs sound: "
                        "a replica learns your voice and how your mouth moves with it."
                    )
            self.joined = self.work / "joined.mp4"
            await asyncio.to_thread(video.concatenate, list(self.sources), self.joined)
        self.prepared = await prep.prepare(
            self.joined,
            self.out / layout.PREPARED,
            options=self.opts.prepare,
            vad=self.vad,
            progress=log.info,
            report=self.report,
            normalised=self.joined.parent == self.work,  # our own join: 25 fps H.264 already
        )
        self.lap("prepare_s")
        self.spans = _sources(self.infos, self.prepared.frame_count)

    async def load_audio(self) -> None:
        """The prepared video's audio (the voice's and the features' input)."""
        from doppel.audio import media

        log.info("audio features and mouth model")
        self.report(Progress(STAGE_FEATURES))
        self.audio = await media.decode_audio(self.prepared.audio_path)
        self.aligned = mouth.to_face_frame(self.prepared.landmarks)

    async def features(self) -> None:
        """The audio features of every frame, and the mouth model's clips cut from them."""
        prepared = self.prepared
        self.clips: list[mouth.Clip] = []
        self.frame_features = np.zeros((prepared.frame_count, 512), np.float32)
        for src in self.spans:
            a, b = src.start, src.start + src.frames
            feats = await self.encode(self.audio.samples[a * 640 : b * 640])
            n = min(len(feats), b - a)
            self.frame_features[a : a + n] = feats[:n]
            piece = max(1, round(CLIP_S * mouth.FPS))
            for s in range(a, a + n, piece):
                e = min(a + n, s + piece)
                if e - s >= 2 * mouth.FPS and prepared.tracked[s:e].mean() > 0.8:
                    self.clips.append(mouth.Clip(self.frame_features[s:e], self.aligned[s:e]))
        self.lap("features_s")
        if not self.clips:
            raise InvalidTrainingVideo(
                "The face could not be followed through any stretch of "
                "speech long enough (2 s) to learn the mouth from."
            )

    async def learn_voice(self) -> dict[str, Any]:
        """The voice profile, learned in a child process (`voice_child.learn_in_child`)."""
        meta = await voice_child.learn_in_child(
            self.audio.samples,
            self.out / layout.VOICE,
            self.work / "voice",
            models_dir=self.opts.models_dir,
            options=self.opts.voice_options,
            stt_url=self.opts.stt_url,
            say=log.info,
        )
        self.report(Progress(STAGE_VOICE, 1, 1))
        return meta

    def adapt_mouth(self) -> mouth.MouthModel:
        """The generic mouth model adapted to this person, saved and exported (a thread)."""
        import torch

        # Small nets: one thread, the other core is the voice's or the renderer inputs'.
        torch.set_num_threads(1)
        try:
            generic = mouth.MouthModel.load(GENERIC_MOUTH)
            clips = self.clips
            model = mouth.adapt(generic, clips, steps=self.opts.mouth_steps, stop=self.jobs.stop)
            model.save(
                self.out / layout.MOUTH_PT,
                {"clips": len(clips), "frames": sum(len(c.points) for c in clips)},
            )
            export_mouth(model, self.out / layout.MOUTH_ONNX)
            log.info("mouth model adapted on %d clips (gain %.2f)", len(clips), model.gain)
            self.report(Progress(STAGE_MOUTH, 1, 1))
            return model
        finally:
            self.mouth_done.set()

    def after_mouth(self) -> None:
        """The renderer's training (not its inputs) waits for the mouth model: both seed and
        draw from torch's process-wide generator, so side by side neither would be the same
        from one run to the next.
        """
        while not self.mouth_done.wait(0.2):
            if self.jobs.stop.is_set():
                break
        if self.jobs.stop.is_set():
            raise Stopped("renderer training stopped")

    def renderer_threads(self) -> int:
        """All of opts.threads once nothing else of this replica runs; one before (two torch
        threads on a core that another job also wants run several times slower).
        """
        return 1 if self.jobs.running - {"renderer"} else self.opts.threads

    async def train_renderer(self) -> tuple[renderer.TrainingSet, dict[str, Any]]:
        """Crop the training frames, train the renderer, save, export and quantize it."""
        import torch

        jobs, out, prepared = self.jobs, self.out, self.prepared
        clock = time.perf_counter()
        log.info("cropping training frames")
        self.report(Progress(STAGE_CROP))
        crops, points = await jobs.thread(
            renderer.crop_regions,
            video.read_frames(prepared.video_path),
            prepared.landmarks,
            source_boxes(prepared.landmarks, self.spans),
        )
        keep = np.flatnonzero(prepared.tracked)
        keep = keep[keep < min(len(crops), prepared.frame_count)]
        data = renderer.TrainingSet(crops[keep], points[keep], self.aligned[keep], keep)
        self.timings["crop_s"] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()
        net, stats = await jobs.thread(
            renderer.train,
            data,
            self.opts.renderer,
            progress=log.info,
            report=self.report,
            threads=self.renderer_threads,
            stop=jobs.stop,
            before_training=self.after_mouth,
        )
        await jobs.thread(
            torch.save,
            {k: v.half() for k, v in net.state_dict().items()},
            out / layout.RENDERER_PT,
        )
        onnx = out / layout.RENDERER_ONNX
        parity = await jobs.thread(export_renderer, net, onnx, data)
        int8 = await jobs.thread(quantize_renderer, onnx, out / layout.RENDERER_INT8, data)
        log.info(
            "renderer quantized to int8 %s (%+.1f%% error against real frames, mean diff %s grey "
            "levels from the float graph)",
            "kept" if int8["kept"] else "rejected",
            100 * int8["extra_error"],
            int8["mean_diff"],
        )
        self.timings["renderer_s"] = round(time.perf_counter() - clock, 2)
        return data, {**stats, "parity_max_diff": parity, "int8": int8}

    def write_bank(self, data: renderer.TrainingSet) -> None:
        """The render-time references: at most MAX_BANK tracked frames, evenly spread."""
        keep = data.frames
        bank_idx = (
            keep
            if len(keep) <= MAX_BANK
            else keep[np.linspace(0, len(keep) - 1, MAX_BANK).astype(int)]
        )
        sel = np.searchsorted(keep, bank_idx)
        Bank(
            data.crops[sel],
            data.points[sel],
            data.aligned[sel],
            bank_idx,
            self.frame_features[bank_idx],
        ).save(self.out / layout.BANK)

    def finish(
        self, model: mouth.MouthModel, stats: dict[str, Any], voice_meta: dict[str, Any] | None
    ) -> Replica:
        """replica.json (written last: its presence means trained), then the replica."""
        prepared, out = self.prepared, self.out
        base, idle = _base_and_idle(prepared, self.spans)
        meta = {
            "format_version": layout.FORMAT_VERSION,
            "size": regions.SIZE,
            "sources": [dataclasses.asdict(s) for s in self.spans],
            "frames": prepared.frame_count,
            "base": list(base),
            "idle": list(idle) if idle else None,
            "mouth": {"gain": model.gain, "lead": model.lead, "clips": len(self.clips)},
            "voice": voice_meta,
            "renderer": {
                **{k: round(float(v), 4) for k, v in stats.items() if k != "int8"},
                "int8": stats["int8"],
            },
            "timings": {**self.timings, "total_s": round(time.perf_counter() - self.start, 2)},
            "video_seconds": round(prepared.duration_s, 2),
        }
        (out / layout.META).write_text(json.dumps(meta, indent=2) + "\n")
        if self.joined.parent == self.work:
            self.joined.unlink(missing_ok=True)
        log.info("replica ready in %s (%.0f s)", out, time.perf_counter() - self.start)
        self.report(Progress(STAGE_READY))
        return Replica.load(out)


def _sources(infos: Sequence[video.VideoInfo], frames: int) -> list[Source]:
    """Frame spans of each joined source in the prepared video (by duration; the last absorbs
    rounding).
    """
    spans, start = [], 0
    for i, info in enumerate(infos):
        n = frames - start if i == len(infos) - 1 else round(info.duration_s * video.ENGINE_FPS)
        n = max(0, min(n, frames - start))
        spans.append(Source(info.path.name, start, n))
        start += n
    return spans


def _base_and_idle(
    prepared: prep.PreparedVideo, spans: Sequence[Source]
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """Replica-mode base frames: the longest tracked talking stretch within one source (played
    forward and backward, so no jump); idle: the longest tracked silent stretch (>= 1 s).
    """
    speaking = prepared.speaking()
    tracked = prepared.tracked

    def longest(mask: np.ndarray) -> tuple[int, int]:
        best = (0, 0)
        for src in spans:
            run_start = None
            for t in range(src.start, src.start + src.frames + 1):
                on = t < src.start + src.frames and bool(mask[t])
                if on and run_start is None:
                    run_start = t
                if not on and run_start is not None:
                    if t - run_start > best[1] - best[0]:
                        best = (run_start, t)
                    run_start = None
        return best

    # Talking stretch: from the first to the last speech of a source, pauses included.
    talk = np.zeros_like(speaking)
    for src in spans:
        idx = np.flatnonzero(speaking[src.start : src.start + src.frames]) + src.start
        if len(idx):
            talk[idx[0] : idx[-1] + 1] = True
    base = longest(talk & tracked)
    if base[1] - base[0] < 2:
        base = longest(tracked)
    idle = longest(~speaking & tracked)
    return base, (idle if idle[1] - idle[0] >= video.ENGINE_FPS else None)
