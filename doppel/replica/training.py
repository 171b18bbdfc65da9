"""Replica training: from a person's training video(s) to the artefacts that render them.

A replica is a folder:

    replica.json     what was trained, from what, how long each step took, base/idle ranges
    prepared/        the checked 25 fps training video, its audio and per-frame tracking
    mouth.pt/.onnx   audio features -> mouth shape, adapted to this person (doppel.face.mouth)
    renderer.pt/.onnx  lower-face renderer trained on this person's frames (face.renderer)
    renderer.int8.onnx the same graph quantized to 8-bit (served on CPU; absent when it did not
                     match the float graph closely enough)
    bank.npz         the person's region crops with their shapes: render-time references

Inference never happens here except through the callables passed in (`encode`, `vad`), so the
CLI and workers run the Triton models and tests may run the same graphs in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.errors import InvalidTrainingVideo, Stopped
from doppel.face import mouth, regions, renderer, tracking, video
from doppel.face import prepare as prep
from doppel.settings import REPO_ROOT

FORMAT_VERSION = 1
META = "replica.json"
GENERIC_MOUTH = REPO_ROOT / "doppel" / "assets" / "mouth_generic.pt"
#: Bank size cap: enough shapes for retrieval, bounded disk (JPEG crops, ~10 KB each).
MAX_BANK = 1500
#: Mouth-model clips longer than this are cut into pieces (the fold calibration needs several).
CLIP_S = 10.0

#: 16 kHz samples -> [ceil(n / 640), 512] features (TritonClient.encode_audio fits).
Encode = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclasses.dataclass
class TrainOptions:
    prepare: prep.PrepareOptions = dataclasses.field(default_factory=prep.PrepareOptions)
    renderer: renderer.TrainConfig = dataclasses.field(default_factory=renderer.TrainConfig)
    mouth_steps: int = 400
    threads: int = 2
    #: Learn the person's voice too (doppel.voice; needs `models_dir` for Whisper and the base
    #: voices). A replica is a face and a voice; tests of the face alone turn it off.
    voice: bool = True
    voice_options: Any = None  # doppel.voice.conversion.TrainOptions; None: its defaults
    models_dir: Path | None = None
    #: Triton gRPC address whose `stt` model the voice hears its speech with (the platform's
    #: Whisper); None: Whisper in the voice's own process.
    stt_url: str | None = None


@dataclasses.dataclass
class Source:
    name: str
    start: int  # first frame in the prepared video
    frames: int


@dataclasses.dataclass
class Replica:
    """A trained replica folder, as render needs it."""

    folder: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> Replica:
        path = folder / META
        if not path.exists():
            raise FileNotFoundError(
                f"{folder} is not a replica folder (no {META}): train one with "
                "`python -m doppel replica train`"
            )
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder} holds a replica of format {meta.get('format_version')}; "
                f"this code reads {FORMAT_VERSION}: train it again"
            )
        return cls(folder.resolve(), meta)

    @property
    def prepared(self) -> prep.PreparedVideo:
        return prep.PreparedVideo.load(self.folder / "prepared")

    @property
    def base_range(self) -> tuple[int, int]:
        a, b = self.meta["base"]
        return int(a), int(b)

    @property
    def idle_range(self) -> tuple[int, int] | None:
        idle = self.meta.get("idle")
        return (int(idle[0]), int(idle[1])) if idle else None

    @property
    def sources(self) -> list[Source]:
        return [Source(**s) for s in self.meta["sources"]]

    def crop_boxes(self, prepared: prep.PreparedVideo) -> np.ndarray:
        """Face crop boxes of the prepared video, smoothed within each source clip
        (`source_boxes`); replicas trained before that was done store boxes smoothed across
        the cuts, wrong by up to ~50 px on the first frames of a clip.
        """
        return source_boxes(prepared.landmarks, self.sources)

    def bank(self) -> Bank:
        """The reference bank, decoded once per process while the file is unchanged (`_BANKS`:
        ~46 MB each; decoding its JPEGs takes ~0.3 s, a tenth of a short render).
        """
        path = self.folder / "bank.npz"
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _BANKS_LOCK:
            bank = _BANKS.pop(key, None)
        if bank is None:
            bank = Bank.load(path)
        with _BANKS_LOCK:
            _BANKS[key] = bank  # most recently used last
            while len(_BANKS) > BANK_CACHE:
                _BANKS.pop(next(iter(_BANKS)))
        return bank

    @property
    def voice_folder(self) -> Path | None:
        """The replica's voice profile folder (doppel.voice), None if trained without one."""
        voice = self.meta.get("voice")
        return self.folder / voice["folder"] if voice else None

    def mouth_model(self) -> mouth.MouthModel:
        return mouth.MouthModel.load(self.folder / "mouth.pt")


#: Banks kept decoded in one process (a worker renders the same few replicas again and again).
BANK_CACHE = 4
_BANKS: dict[tuple[str, int, int], Bank] = {}
_BANKS_LOCK = threading.Lock()


@dataclasses.dataclass
class Bank:
    """Reference crops of the person with their shapes (regions.choose_references)."""

    crops: np.ndarray  # [M, S, S, 3] uint8
    points: np.ndarray  # [M, P, 2]
    aligned: np.ndarray  # [M, 53, 2]
    frames: np.ndarray  # [M]
    features: np.ndarray  # [M, 512] audio features of those frames (the retrieval baseline)

    def save(self, path: Path) -> None:
        import cv2

        blobs = [
            cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            for c in self.crops
        ]
        offsets = np.cumsum([0] + [len(b) for b in blobs])
        np.savez(
            path,
            jpeg=np.concatenate(blobs).astype(np.uint8),
            offsets=offsets,
            points=self.points.astype(np.float32),
            aligned=self.aligned.astype(np.float32),
            frames=self.frames.astype(np.int64),
            features=self.features.astype(np.float16),
        )

    @classmethod
    def load(cls, path: Path) -> Bank:
        import cv2

        with np.load(path) as d:
            data = {k: d[k] for k in d.files}
        o = data["offsets"]
        crops = np.stack(
            [
                cv2.imdecode(data["jpeg"][o[i] : o[i + 1]], cv2.IMREAD_COLOR)[..., ::-1]
                for i in range(len(o) - 1)
            ]
        )
        arrays = [
            np.ascontiguousarray(crops),
            data["points"],
            data["aligned"],
            data["frames"],
            data["features"].astype(np.float32),
        ]
        for a in arrays:
            a.setflags(write=False)  # shared by the renders of a process (`Replica.bank`)
        return cls(*arrays)


async def train(
    sources: Sequence[Path],
    out: Path,
    *,
    encode: Encode,
    vad: prep.SpeechProbabilities,
    options: TrainOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> Replica:
    """Train a replica from one or more videos of one person into the folder `out`."""
    import torch

    opts = options or TrainOptions()
    say = progress or (lambda _: None)
    torch.set_num_threads(opts.threads)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    start = clock

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    work = out / "work"
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    infos = [video.probe(p) for p in sources]
    if len(sources) == 1:
        joined = Path(sources[0])
    else:
        say(f"joining {len(sources)} clips")
        for info in infos:
            if not info.has_audio:
                raise InvalidTrainingVideo(
                    f"{info.path.name} has no audio track. Every training clip needs sound: a "
                    "replica learns your voice and how your mouth moves with it."
                )
        joined = work / "joined.mp4"
        await asyncio.to_thread(video.concatenate, list(sources), joined)
    prepared = await prep.prepare(
        joined,
        out / "prepared",
        options=opts.prepare,
        vad=vad,
        progress=say,
        normalised=joined.parent == work,  # our own join: 25 fps H.264 already
    )
    lap("prepare_s")
    spans = _sources(infos, prepared.frame_count)

    # --- audio features; then mouth model, voice and renderer side by side -------------------
    say("audio features and mouth model")
    from doppel.audio import media

    audio = await media.decode_audio(prepared.audio_path)
    aligned = mouth.to_face_frame(prepared.landmarks)
    # The voice needs only the audio: it starts now, in its own process on one core, and the
    # face steps share the rest (`_Concurrent`).
    jobs = _Concurrent()
    if opts.voice:
        jobs.start("voice", _train_voice(audio.samples, out / "voice", work / "voice", opts, say))
    try:
        clips: list[mouth.Clip] = []
        features = np.zeros((prepared.frame_count, 512), np.float32)
        for src in spans:
            a, b = src.start, src.start + src.frames
            samples = audio.samples[a * 640 : b * 640]
            feats = await encode(samples)
            n = min(len(feats), b - a)
            features[a : a + n] = feats[:n]
            piece = max(1, round(CLIP_S * mouth.FPS))
            for s in range(a, a + n, piece):
                e = min(a + n, s + piece)
                if e - s >= 2 * mouth.FPS and prepared.tracked[s:e].mean() > 0.8:
                    clips.append(mouth.Clip(features[s:e], aligned[s:e]))
        lap("features_s")
        if not clips:
            raise InvalidTrainingVideo(
                "The face could not be followed through any stretch of "
                "speech long enough (2 s) to learn the mouth from."
            )

        mouth_done = threading.Event()

        def adapt_mouth() -> mouth.MouthModel:
            # Small nets: one thread, the other core is the voice's or the renderer inputs'.
            torch.set_num_threads(1)
            try:
                return _adapt_mouth()
            finally:
                mouth_done.set()

        def after_mouth() -> None:
            # The renderer's training (not its inputs) waits for the mouth model: both seed and
            # draw from torch's process-wide generator, so side by side neither would be the
            # same from one run to the next.
            while not mouth_done.wait(0.2):
                if jobs.stop.is_set():
                    break
            if jobs.stop.is_set():
                raise Stopped("renderer training stopped")

        def _adapt_mouth() -> mouth.MouthModel:
            generic = mouth.MouthModel.load(GENERIC_MOUTH)
            model = mouth.adapt(generic, clips, steps=opts.mouth_steps, stop=jobs.stop)
            model.save(
                out / "mouth.pt",
                {"clips": len(clips), "frames": sum(len(c.points) for c in clips)},
            )
            export_mouth(model, out / "mouth.onnx")
            say(f"mouth model adapted on {len(clips)} clips (gain {model.gain:.2f})")
            return model

        def renderer_threads() -> int:
            # All of opts.threads once nothing else of this replica runs; one before (two
            # torch threads on a core that another job also wants run several times slower).
            return 1 if jobs.running - {"renderer"} else opts.threads

        async def train_renderer() -> tuple[renderer.TrainingSet, Any, dict[str, Any]]:
            clock = time.perf_counter()
            say("cropping training frames")
            crops, points = await jobs.thread(
                renderer.crop_regions,
                video.read_frames(prepared.video_path),
                prepared.landmarks,
                source_boxes(prepared.landmarks, spans),
            )
            keep = np.flatnonzero(prepared.tracked)
            keep = keep[keep < min(len(crops), prepared.frame_count)]
            data = renderer.TrainingSet(crops[keep], points[keep], aligned[keep], keep)
            timings["crop_s"] = round(time.perf_counter() - clock, 2)
            clock = time.perf_counter()
            net, stats = await jobs.thread(
                renderer.train,
                data,
                opts.renderer,
                progress=say,
                threads=renderer_threads,
                stop=jobs.stop,
                before_training=after_mouth,
            )
            await jobs.thread(
                torch.save,
                {k: v.half() for k, v in net.state_dict().items()},
                out / "renderer.pt",
            )
            parity = await jobs.thread(export_renderer, net, out / "renderer.onnx", data)
            int8 = await jobs.thread(
                quantize_renderer, out / "renderer.onnx", out / RENDERER_INT8, data
            )
            say(
                "renderer quantized to int8 "
                + ("kept" if int8["kept"] else "rejected")
                + f" ({int8['extra_error']:+.1%} error against real frames, mean diff "
                f"{int8['mean_diff']} grey levels from the float graph)"
            )
            timings["renderer_s"] = round(time.perf_counter() - clock, 2)
            return data, net, {**stats, "parity_max_diff": parity, "int8": int8}

        jobs.start("mouth", jobs.thread(adapt_mouth))
        jobs.start("renderer", train_renderer(), timed=False)  # crop_s and renderer_s inside
        done = await jobs.wait()
    except BaseException:
        await jobs.abandon()
        raise
    timings.update(jobs.seconds)
    lap("concurrent_s")
    model: mouth.MouthModel = done["mouth"]
    data, _, stats = done["renderer"]
    voice_meta = done.get("voice")
    keep = data.frames

    bank_idx = (
        keep if len(keep) <= MAX_BANK else keep[np.linspace(0, len(keep) - 1, MAX_BANK).astype(int)]
    )
    sel = np.searchsorted(keep, bank_idx)
    Bank(data.crops[sel], data.points[sel], data.aligned[sel], bank_idx, features[bank_idx]).save(
        out / "bank.npz"
    )
    lap("bank_s")

    base, idle = _base_and_idle(prepared, spans)
    meta = {
        "format_version": FORMAT_VERSION,
        "size": regions.SIZE,
        "sources": [dataclasses.asdict(s) for s in spans],
        "frames": prepared.frame_count,
        "base": list(base),
        "idle": list(idle) if idle else None,
        "mouth": {"gain": model.gain, "lead": model.lead, "clips": len(clips)},
        "voice": voice_meta,
        "renderer": {
            **{k: round(float(v), 4) for k, v in stats.items() if k != "int8"},
            "int8": stats["int8"],
        },
        "timings": {**timings, "total_s": round(time.perf_counter() - start, 2)},
        "video_seconds": round(prepared.duration_s, 2),
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    if joined.parent == work:
        joined.unlink(missing_ok=True)
    say(f"replica ready in {out} ({time.perf_counter() - start:.0f} s)")
    return Replica.load(out)


class _Concurrent:
    """Training steps running side by side (asyncio tasks), each timed on its own; the first
    failure stops the rest (`stop` for threads, cancellation for tasks, which kills a child
    process) before it is raised, so nothing keeps running behind a failed or cancelled replica.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.seconds: dict[str, float] = {}
        #: Steps not finished yet (the renderer's thread count depends on them).
        self.running: set[str] = set()
        self._threads = 0  # worker threads still running (they outlive a cancelled task)
        self._ended = threading.Condition()

    def start(self, name: str, work: Awaitable[Any], *, timed: bool = True) -> None:
        """Run `work` as the step `name`; `timed`: its wall time is `seconds[name + "_s"]`."""

        async def run() -> Any:
            clock = time.perf_counter()
            self.running.add(name)
            try:
                return await work
            finally:
                self.running.discard(name)
                if timed:
                    self.seconds[f"{name}_s"] = round(time.perf_counter() - clock, 2)

        self.tasks[name] = asyncio.create_task(run())

    async def thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`asyncio.to_thread`, counted until the thread itself ends (`abandon` waits)."""

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._ended:
                    self._threads -= 1
                    self._ended.notify_all()

        with self._ended:
            self._threads += 1
        return await asyncio.to_thread(counted)

    async def wait(self) -> dict[str, Any]:
        """Every step's result; raises the first failure (after stopping the others)."""
        pending = set(self.tasks.values())
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    await self.abandon()
                    raise exc
        return {name: task.result() for name, task in self.tasks.items()}

    async def abandon(self) -> None:
        """Stop every step still running and return once each has: tasks are cancelled (the
        voice process killed), threads end at their next training step (`stop`).
        """
        self.stop.set()
        for task in self.tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await asyncio.to_thread(self._joined)

    def _joined(self) -> None:
        with self._ended:
            self._ended.wait_for(lambda: self._threads == 0)


async def _train_voice(
    samples: np.ndarray,
    folder: Path,
    job: Path,
    opts: TrainOptions,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The replica's voice profile from the training video's speech (`voice/`), learned in a
    child process (`doppel.replica.voice_child`): in a thread, its torch.manual_seed and draws would
    interleave with the face steps' on torch's process-wide generator, its torch threads would
    add to theirs, and it could not be stopped before it ends by itself.
    """
    import os
    import sys

    from doppel import errors
    from doppel.replica import voice_child
    from doppel.settings import models_dir_from_env

    models_dir = opts.models_dir or models_dir_from_env(os.environ)
    await asyncio.to_thread(
        voice_child.write_request,
        job,
        samples,
        folder,
        models_dir,
        opts.voice_options,
        opts.stt_url,
    )
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
    log_path = job / "voice.log"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "doppel.replica.voice_child",
            str(job),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
        )
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "progress" in message:
                    say(message["progress"])
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    error = message
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
    if error is not None:
        kind = getattr(errors, str(error["error"]), None)
        if isinstance(kind, type) and issubclass(kind, errors.InvalidVoiceSample):
            raise kind(error["message"], error.get("reason") or "no_speech")
        if isinstance(kind, type) and issubclass(kind, errors.DoppelError):
            raise kind(error["message"])
        raise RuntimeError(f"voice training failed: {error['error']}: {error['message']}")
    if result is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"voice training exited with code {code} and no result:\n{tail}")
    return result


def source_boxes(landmarks: np.ndarray, spans: Sequence[Source]) -> np.ndarray:
    """`tracking.crop_boxes` smoothed within each joined source only: the cut between two clips
    is no head motion, and smoothing across it pulled a clip's first and last boxes towards the
    other clip's face (a mouth pasted off the mouth: a ghost of the real one beside it).
    """
    boxes = tracking.crop_boxes(landmarks)
    for src in spans:
        a, b = src.start, min(len(landmarks), src.start + src.frames)
        if b > a:
            boxes[a:b] = tracking.crop_boxes(landmarks[a:b])
    return boxes


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


# --- export ----------------------------------------------------------------------------------


def mouth_graph(model: mouth.MouthModel) -> Any:
    """Features [1, T, 512] -> aligned mouth points [1, T, 53, 2], everything inside."""
    import torch
    from torch import nn

    class MouthGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.net
            self.register_buffer("mean", torch.from_numpy(model.feat_mean))
            self.register_buffer("std", torch.from_numpy(model.feat_std))
            self.register_buffer("scale", torch.from_numpy(model.coef_scale * model.gain))
            self.register_buffer("components", torch.from_numpy(model.basis.components))
            self.register_buffer("shape", torch.from_numpy(model.mean_shape.reshape(-1)))
            self.lead = int(model.lead)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            y = self.net((features - mean) / std)
            if self.lead:
                y = torch.cat([y[:, self.lead :], y[:, -1:].expand(-1, self.lead, -1)], 1)
            pts = (y * self.scale) @ self.components + self.shape
            return pts.reshape(pts.shape[0], pts.shape[1], -1, 2)

    return MouthGraph().eval()


def export_mouth(model: mouth.MouthModel, path: Path) -> float:
    """ONNX of the replica's mouth model, checked against PyTorch; returns the max difference."""
    import torch

    graph = mouth_graph(model)
    sample = torch.randn(1, 60, 512) * torch.from_numpy(model.feat_std) + torch.from_numpy(
        model.feat_mean
    )
    _onnx_export(graph, sample, path, "FEATURES", "POINTS", {0: "batch", 1: "frames"})
    with torch.no_grad():
        want = graph(sample).numpy()
    check = np.asarray(model.predict(sample[0].numpy()))
    if np.abs(check - want[0]).max() > 1e-4:
        raise AssertionError("mouth graph disagrees with MouthModel.predict")
    return _parity(path, {"FEATURES": sample.numpy()}, want, 1e-4)


def export_renderer(net: Any, path: Path, data: renderer.TrainingSet | None = None) -> float:
    """ONNX of the renderer (uint8 in and out), checked against PyTorch on real inputs when
    `data` is given; returns the max difference in grey levels.
    """
    import torch

    wrapper = renderer.uint8_wrapper(net)
    size = regions.SIZE
    if data is not None and len(data.crops) > 1:
        j = len(data.crops) // 2
        sample = regions.make_input(data.crops[0], data.points[0], data.crops[j], data.points[j])[
            None
        ]
    else:
        sample = np.random.default_rng(0).integers(0, 256, (1, 7, size, size), dtype=np.uint8)
    x = torch.from_numpy(sample)
    _onnx_export(wrapper, x, path, "INPUT", "IMAGE", {0: "batch"})
    with torch.no_grad():
        want = wrapper(x).numpy()
    # uint8 rounding: ORT and torch may land on either side of .5 for a few pixels.
    return _parity(path, {"INPUT": sample}, want, 2.0)


#: The renderer quantized to 8 bits (`quantize_renderer`).
RENDERER_INT8 = "renderer.int8.onnx"
#: How much more the 8-bit renderer may miss the real frames than the float one (relative mean
#: absolute error on held-out real inputs) before it is rejected. Measured on the Obama replica:
#: int8 at 1.5 grey levels from the float graph missed the real frames by 2 % more (9.19 against
#: 8.96 levels), and the rendered videos scored the same within run-to-run spread (dubbing
#: mouth_corr 0.755 / 0.740, sharpness 0.814 / 0.825, identity 0.391 / 0.388, cross env_corr
#: 0.245 / 0.228): the network's own error is six times the quantization's.
INT8_EXTRA_ERROR = 0.03
#: And no pixel group may stray far: the 99th percentile of |int8 - float| (grey levels).
INT8_P99_DIFF = 8.0


def _sample_frames(n: int, count: int, offset: int) -> np.ndarray:
    """`count` frame indices spread over `n`; offset 0 and 1 give disjoint sets."""
    return np.unique(np.linspace(0, n - 1, count * 2 + 1).astype(int)[offset::2])[:count]


def renderer_samples(data: renderer.TrainingSet, count: int, offset: int = 0) -> np.ndarray:
    """[count, 7, S, S] uint8: real network inputs from the training frames, as rendering
    makes them (each frame's nearest other shape at least a second away, warped onto it).
    """
    picks = _sample_frames(len(data.crops), count, offset)
    refs = regions.training_references(data.aligned, data.frames, 1)
    return np.stack(
        [
            regions.make_input(
                data.crops[t],
                data.points[t],
                data.crops[refs[t, 0]],
                data.points[refs[t, 0]],
                regions.frame_mask(data.points[t, : len(mouth.POINTS)]),
            )
            for t in picks
        ]
    )


def quantize_renderer(
    source: Path, path: Path, data: renderer.TrainingSet, samples: int = 48
) -> dict[str, Any]:
    """Write `path`: `source` (the float renderer ONNX) with weights and activations in 8 bits
    (static QDQ, per-channel weights), calibrated on real inputs from `data`. On this CPU (VNNI)
    it runs the frame about 1.6 times as fast. It is checked on other real frames: kept when it
    misses them by at most INT8_EXTRA_ERROR more than the float graph (mean absolute error
    against the real crop, which the network is trained to reproduce) and strays at most
    INT8_P99_DIFF grey levels from it at the 99th percentile; returns what was measured and
    whether it was kept.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    calibration = renderer_samples(data, samples, 0)
    checked = max(8, samples // 2)
    held_out = renderer_samples(data, checked, 1)
    truth = data.crops[_sample_frames(len(data.crops), checked, 1)].transpose(0, 3, 1, 2)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter([{"INPUT": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    tmp = path.with_suffix(".tmp.onnx")
    quantize_static(
        str(source),
        str(tmp),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    run = {
        name: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for name, p in (("float", source), ("int8", tmp))
    }
    want = run["float"].run(None, {"INPUT": held_out})[0].astype(np.float32)
    got = run["int8"].run(None, {"INPUT": held_out})[0].astype(np.float32)
    diff = np.abs(got - want)
    mean, p99 = float(diff.mean()), float(np.percentile(diff, 99))
    error = {k: float(np.abs(v - truth).mean()) for k, v in (("float", want), ("int8", got))}
    extra = error["int8"] / max(error["float"], 1e-6) - 1.0
    kept = extra <= INT8_EXTRA_ERROR and p99 <= INT8_P99_DIFF
    if kept:
        tmp.replace(path)
    else:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return {
        "kept": kept,
        "mean_diff": round(mean, 3),
        "p99_diff": round(p99, 2),
        "max_diff": float(diff.max()),
        "float_error": round(error["float"], 3),
        "int8_error": round(error["int8"], 3),
        "extra_error": round(extra, 4),
        "calibration_frames": len(calibration),
        "checked_frames": len(held_out),
    }


def quantize_existing(rep: Replica) -> dict[str, Any]:
    """`quantize_renderer` for a replica trained before training quantized: calibrated on its
    reference bank (the same person's frames), recorded in its replica.json.
    """
    bank = rep.bank()
    data = renderer.TrainingSet(bank.crops, bank.points, bank.aligned, bank.frames)
    result = quantize_renderer(rep.folder / "renderer.onnx", rep.folder / RENDERER_INT8, data)
    meta = dict(rep.meta)
    meta["renderer"] = {**meta.get("renderer", {}), "int8": result}
    tmp = rep.folder / f"{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(rep.folder / META)
    return result


def _onnx_export(
    module: Any, sample: Any, path: Path, inp: str, outp: str, axes: dict[int, str]
) -> None:
    import warnings

    import torch

    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(tmp),
            input_names=[inp],
            output_names=[outp],
            dynamic_axes={inp: axes, outp: axes},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)


def _parity(path: Path, feeds: dict[str, np.ndarray], want: np.ndarray, atol: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)[0]
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    if diff > atol:
        raise AssertionError(
            f"{path.name}: ONNX Runtime differs from PyTorch by {diff} (allowed {atol})"
        )
    return diff


def local_encoder(models_dir: Path) -> Encode:
    """The `audio_encoder` graph in-process (tests and scripts without a platform)."""
    from doppel.audio.features import OnnxAudioEncoder
    from export.registry import onnx_path

    enc = OnnxAudioEncoder(onnx_path(models_dir, "audio_encoder"), threads=1)

    async def encode(samples: np.ndarray) -> np.ndarray:
        return (await asyncio.to_thread(enc.encode, [samples]))[0]

    return encode
