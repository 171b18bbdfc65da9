"""Replica training's orchestration: steps side by side stop together, the voice child's
errors reach the caller as they were raised there, the renderer prepares only what it trains on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from doppel.errors import InvalidVoiceSample, Stopped
from doppel.face import prepare, regions, renderer
from doppel.platform.progress import Progress
from doppel.replica import training, voice_child
from doppel.replica.concurrent import Concurrent
from doppel.settings import Settings, default_cache_dir
from orchestrator.jobs.replica import percent_of


def _spin(stop: threading.Event, ended: list[str], name: str) -> None:
    """A training loop: runs until stopped."""
    try:
        while True:
            if stop.is_set():
                raise Stopped(name)
            time.sleep(0.01)
    finally:
        ended.append(name)


async def test_a_failed_step_stops_the_others_before_it_is_raised() -> None:
    jobs = Concurrent()
    ended: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0.1)
        raise InvalidVoiceSample("no speech here", "no_speech")

    jobs.start("renderer", jobs.thread(_spin, jobs.stop, ended, "renderer"))
    jobs.start("voice", fails())
    with pytest.raises(InvalidVoiceSample, match="no speech here"):
        await jobs.wait()
    assert ended == ["renderer"], "the thread must have ended when the error is raised"
    assert jobs.running == set()


async def test_cancelling_training_ends_its_threads() -> None:
    jobs = Concurrent()
    ended: list[str] = []

    async def run() -> None:
        try:
            jobs.start("mouth", jobs.thread(_spin, jobs.stop, ended, "mouth"))
            jobs.start("renderer", jobs.thread(_spin, jobs.stop, ended, "renderer"))
            await jobs.wait()
        except BaseException:
            await jobs.abandon()
            raise

    task = asyncio.create_task(run())
    await asyncio.sleep(0.2)
    assert jobs.running == {"mouth", "renderer"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(ended) == ["mouth", "renderer"]


async def test_results_and_timings_of_concurrent_steps() -> None:
    jobs = Concurrent()

    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    jobs.start("a", value(1, 0.05))
    jobs.start("b", jobs.thread(lambda: 2))
    jobs.start("c", value(3, 0.0), timed=False)
    assert await jobs.wait() == {"a": 1, "b": 2, "c": 3}
    assert set(jobs.seconds) == {"a_s", "b_s"} and jobs.seconds["a_s"] >= 0.05


def _models() -> Path:
    models = Path(os.environ.get("DOPPEL_MODELS_DIR", default_cache_dir(os.environ) / "models"))
    if not models.exists():
        pytest.skip(f"needs the models at {models}")
    return models


async def test_voice_child_process_raises_invalid_voice_sample_here(tmp_path: Path) -> None:
    models = _models()
    said: list[str] = []
    silence = np.zeros(16000 * 5, np.float32)
    with pytest.raises(InvalidVoiceSample) as caught:
        await voice_child.learn_in_child(
            silence,
            tmp_path / "voice",
            tmp_path / "job",
            models_dir=models,
            options=None,
            stt_url=None,
            say=said.append,
        )
    assert caught.value.reason == "no_speech"
    assert "no speech" in caught.value.message
    assert said[0] == "learning the voice", "progress comes through from the child"


async def test_voice_child_hears_through_the_given_triton(tmp_path: Path) -> None:
    """With `stt_url`, the voice's Whisper is that Triton's `stt` model: an address where no
    Triton answers fails the voice with the service error (the platform passes its own)."""
    from doppel.audio.media import decode_audio
    from doppel.errors import ServiceUnavailable
    from tests.conftest import shared_file

    models = _models()
    clips = [
        (await decode_audio(shared_file("speech", "ljspeech", "wavs", f"LJ001-000{n}.wav"))).samples
        for n in (1, 3)
    ]
    said: list[str] = []
    with pytest.raises(ServiceUnavailable, match="stt"):
        await voice_child.learn_in_child(
            np.concatenate(clips),
            tmp_path / "voice",
            tmp_path / "job",
            models_dir=models,
            options=None,
            stt_url="127.0.0.1:1",
            say=said.append,
        )
    assert any("s of speech" in s for s in said), said


def _training_set(frames: int = 40) -> renderer.TrainingSet:
    rng = np.random.default_rng(0)
    size = regions.SIZE
    crops = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    base = rng.uniform(0.25 * size, 0.75 * size, (len(regions.WARP_POINTS), 2))
    points = (base + rng.normal(0, 2, (frames, *base.shape))).astype(np.float32)
    aligned = rng.normal(0, 1, (frames, 53, 2)).astype(np.float32)
    return renderer.TrainingSet(crops, points, aligned, np.arange(frames) * 3)


def test_prepare_inputs_makes_only_the_pairs_asked_for() -> None:
    data = _training_set()
    refs = regions.training_references(data.aligned, data.frames, 2, gap=5)
    full, full_slots, full_masks = renderer.prepare_inputs(data, refs)
    assert full.shape[0] == refs.size and (full_slots >= 0).all()
    needed = np.zeros(refs.shape, bool)
    needed[[1, 5, 5, 30], [0, 0, 1, 1]] = True
    some, slots, masks = renderer.prepare_inputs(data, refs, needed=needed)
    assert len(some) == 4 and (slots[~needed] == -1).all()
    for t, r in zip(*np.nonzero(needed), strict=True):
        assert np.array_equal(some[slots[t, r]], full[full_slots[t, r]])
        assert np.array_equal(masks[t], full_masks[t])


def test_renderer_training_steps_and_threads() -> None:
    """A few steps: the net comes back in the default layout, asked threads are applied."""
    import torch

    data = _training_set(30)
    asked: list[int] = []
    reports: list[Progress] = []

    def threads() -> int:
        asked.append(1)
        return 1

    before = torch.get_num_threads()
    try:
        net, stats = renderer.train(
            data,
            renderer.TrainConfig(steps=12, batch=2, references=2),
            threads=threads,
            report=reports.append,
        )
    finally:
        torch.set_num_threads(before)
    assert len(asked) == 2  # steps 0 and 10
    assert reports == [
        Progress(renderer.STAGE_INPUTS, 0, 30),
        Progress(renderer.STAGE, 1, 12),
        Progress(renderer.STAGE, 12, 12),
    ]
    assert stats["inputs"] <= 24 and stats["frames"] == 30
    assert all(p.is_contiguous() for p in net.parameters())
    out = renderer.render_batch(net, np.zeros((1, 7, regions.SIZE, regions.SIZE), np.uint8))
    assert out.shape == (1, 3, regions.SIZE, regions.SIZE)

    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        renderer.train(data, renderer.TrainConfig(steps=12, batch=2, references=2), stop=stop)


def test_train_options_from_settings() -> None:
    """The worker's options: its models, its Triton's Whisper, the small-training overrides."""
    settings = Settings(
        database_url="postgresql://x",
        redis_url="redis://x",
        triton_grpc_url="127.0.0.1:8001",
        triton_http_url="",
        data_dir=Path("/data"),
        models_dir=Path("/models"),
    )
    plain = training.TrainOptions.from_settings(settings)
    assert plain.models_dir == Path("/models") and plain.stt_url == "127.0.0.1:8001"
    assert plain.renderer.steps == training.TrainOptions().renderer.steps
    assert plain.mouth_steps == 400 and plain.voice_options is None and plain.voice
    small = training.TrainOptions.from_settings(
        dataclasses.replace(settings, renderer_steps=20, mouth_steps=5, voice_epochs=2)
    )
    assert small.renderer.steps == 20 and small.mouth_steps == 5
    assert small.voice_options.epochs == 2 and small.voice_options.align_passes == 1
    # Each options object has its own renderer config (the default's is not changed).
    assert training.TrainOptions().renderer.steps == plain.renderer.steps


def test_percent_of_training_stages() -> None:
    """The job's 0-100 scale: prepare 0-15, mouth 15-25, voice 25-35, the renderer's inputs
    35-40 and its steps 40-95, ready 99; a stage that says nothing new is None."""
    steps = prepare.PREPARE_STEPS
    seen = [
        percent_of(Progress(training.STAGE_JOIN)),
        *(percent_of(Progress(prepare.STAGE, k, steps)) for k in range(1, steps + 1)),
        percent_of(Progress(training.STAGE_FEATURES)),
        percent_of(Progress(training.STAGE_MOUTH, 1, 1)),
        percent_of(Progress(training.STAGE_VOICE, 1, 1)),
        percent_of(Progress(training.STAGE_CROP)),
        percent_of(Progress(renderer.STAGE_INPUTS, 0, 400)),
        percent_of(Progress(renderer.STAGE_INPUTS, 200, 400)),
        percent_of(Progress(renderer.STAGE, 1, 100)),
        percent_of(Progress(renderer.STAGE, 100, 100)),
        percent_of(Progress(training.STAGE_READY)),
    ]
    assert seen == [1, 5, 8, 11, 15, 16, 25, 35, 35, 35, 37, 40, 95, 99]
    assert percent_of(Progress(prepare.STAGE, 0, steps)) is None
    assert percent_of(Progress("something else", 1, 2)) is None
