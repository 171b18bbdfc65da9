"""Per-replica ONNX models: the session cache on its own, and the `talking_head` and
`mouth_motion` Triton models end to end, with tiny stand-in graphs of the real IO.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from doppel.errors import InferenceFailed
from doppel.face.regions import SIZE as S
from doppel.platform.onnx_export import export_onnx
from doppel.platform.sessions import SessionCache, open_session
from doppel.replica import layout
from doppel.replica import serving as rm
from doppel.settings import Settings, onnx_providers_from_env
from doppel.triton import TritonClient

# --- stand-in replicas ------------------------------------------------------------------------


def _export(module, sample, path: Path, inp: str, outp: str, axes: dict[int, str]) -> None:
    """torch -> ONNX the way training does (the one exporter)."""
    export_onnx(
        module,
        {inp: sample},
        path,
        outputs=[outp],
        dynamic_axes={inp: axes, outp: axes},
        quiet=True,
    )


def write_renderer(folder: Path, scale: float, offset: float = 0.0) -> Path:
    """renderer.onnx: IMAGE = the first 3 INPUT channels x scale + offset, as uint8."""
    import torch

    class Renderer(torch.nn.Module):
        def forward(self, x):
            y = x[:, :3].to(torch.float32) * scale + offset
            return y.round().clamp(0, 255).to(torch.uint8)

    sample = torch.zeros(2, 7, S, S, dtype=torch.uint8)
    path = folder / layout.RENDERER_ONNX
    _export(Renderer(), sample, path, layout.RENDERER_INPUT, layout.RENDERER_OUTPUT, {0: "batch"})
    return path


def write_mouth(folder: Path, seed: int) -> Path:
    """mouth.onnx: a seeded Linear 512 -> 106 reshaped to 53 points."""
    import torch

    class Mouth(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.linear = torch.nn.Linear(512, 106)

        def forward(self, features):
            return self.linear(features).unflatten(-1, (53, 2))

    path = folder / layout.MOUTH_ONNX
    _export(
        Mouth(),
        torch.zeros(1, 5, 512),
        path,
        layout.MOUTH_INPUT,
        layout.MOUTH_OUTPUT,
        {1: "frames"},
    )
    return path


def make_replica(folder: Path, scale: float, offset: float, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_renderer(folder, scale, offset)
    write_mouth(folder, seed)
    return folder


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("replicas")
    return [
        make_replica(root / "ada", 0.5, 3.0, seed=1),
        make_replica(root / "bo", 0.25, 100.0, seed=2),
        make_replica(root / "cy", 1.0, -7.0, seed=3),
    ]


def local(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What ONNX Runtime says here, in-process."""
    return np.asarray(open_session(path).run(None, feeds)[0])


def frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 7, S, S), dtype=np.uint8)


# --- the session cache ------------------------------------------------------------------------


class Counting:
    """A loader that records what it loaded and returns a fresh token each time."""

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def __call__(self, path: Path) -> object:
        self.loaded.append(path)
        return object()


def test_cache_hits_misses_and_evicts_least_recently_used(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in ("a.onnx", "b.onnx", "c.onnx"))
    for p in (a, b, c):
        p.write_bytes(b"graph " + p.name.encode())
    loader = Counting()
    cache = SessionCache(2, loader=loader)
    sa = cache.get(a)
    sb = cache.get(b)
    assert cache.get(a) is sa  # hit; b is now least recently used
    cache.get(c)  # evicts b
    assert cache.paths() == [a.resolve(), c.resolve()]
    assert b not in cache and a in cache
    assert cache.get(b) is not sb  # loaded again, evicts a
    assert cache.paths() == [c.resolve(), b.resolve()]
    assert cache.stats() == {
        "size": 2,
        "capacity": 2,
        "hits": 1,
        "misses": 4,
        "reloads": 0,
        "evictions": 2,
    }
    assert loader.loaded == [a.resolve(), b.resolve(), c.resolve(), b.resolve()]
    # A symlink to a cached file is the same entry.
    link = tmp_path / "link.onnx"
    link.symlink_to(c)
    cache.get(link)
    assert cache.stats()["hits"] == 2


def test_cache_reloads_a_retrained_replica(tmp_path: Path) -> None:
    path = write_renderer(tmp_path, 0.5)
    cache = SessionCache(4)
    x = frames(2, seed=0)
    first = rm.run_renderer(cache.get(path), x)
    np.testing.assert_array_equal(first, local(path, {layout.RENDERER_INPUT: x}))
    assert cache.get(path) is cache.get(path)

    write_renderer(tmp_path, 0.25)  # retrained: a new file renamed over the old one
    second = rm.run_renderer(cache.get(path), x)
    np.testing.assert_array_equal(second, local(path, {layout.RENDERER_INPUT: x}))
    assert not np.array_equal(first, second)
    assert cache.stats()["reloads"] == 1 and len(cache) == 1

    # Rewritten in place: a new mtime is enough.
    session = cache.get(path)
    data = path.read_bytes()
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.get(path) is not session
    assert cache.stats()["reloads"] == 2


def test_clear_errors_for_bad_replicas(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relative path; pass the replica's absolute folder"):
        rm.replica_file("replicas/ada", layout.RENDERER_ONNX)
    with pytest.raises(ValueError, match="does not exist"):
        rm.replica_file(str(tmp_path / "nobody"), layout.RENDERER_ONNX)
    with pytest.raises(ValueError, match="no replica folder given"):
        rm.replica_file(b"", layout.RENDERER_ONNX)
    missing = tmp_path / layout.MOUTH_ONNX
    with pytest.raises(ValueError) as info:
        rm.replica_file(str(tmp_path).encode(), layout.MOUTH_ONNX)
    assert str(missing) in str(info.value) and "train the replica first" in str(info.value)
    with pytest.raises(ValueError, match="one request must name one replica"):
        rm.replica_name(np.array([[b"/a"], [b"/b"]], dtype=np.object_))
    assert rm.replica_name(np.array([[b"/a"], [b"/a"]], dtype=np.object_)) == "/a"

    broken = tmp_path / layout.RENDERER_ONNX
    broken.write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="could not be loaded by ONNX Runtime") as info:
        SessionCache(2).get(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(ValueError, match="at least 1"):
        SessionCache(0)
    with pytest.raises(ValueError, match="INPUT must be"):
        rm.check_frames(np.zeros((1, 7, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="FEATURES must be float32"):
        rm.check_features(np.zeros((1, 4, 512), np.float64))


def test_cache_capacity_sources() -> None:
    params = {"max_replicas": "16"}
    assert rm.cache_capacity("talking_head", {}, {}, default=5) == 5
    assert rm.cache_capacity("talking_head", params, {}, default=5) == 16
    env = {"DOPPEL_REPLICA_CACHE": "3"}
    assert rm.cache_capacity("talking_head", params, env, default=5) == 3
    env["DOPPEL_REPLICA_CACHE_TALKING_HEAD"] = "2"
    assert rm.cache_capacity("talking_head", params, env, default=5) == 2
    assert rm.cache_capacity("mouth_motion", params, env, default=5) == 3
    with pytest.raises(ValueError, match="DOPPEL_REPLICA_CACHE='lots'"):
        rm.cache_capacity("mouth_motion", params, {"DOPPEL_REPLICA_CACHE": "lots"}, default=5)


def test_execution_providers_come_from_one_setting(replicas: list[Path]) -> None:
    """CPU unless DOPPEL_ONNX_PROVIDERS names others (in order of preference); Settings and the
    Triton models read it the same way, and sessions are opened with what they are given.
    """
    cpu = ("CPUExecutionProvider",)
    assert onnx_providers_from_env({}) == cpu
    assert onnx_providers_from_env({"DOPPEL_ONNX_PROVIDERS": " , "}) == cpu
    gpu = {"DOPPEL_ONNX_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider,"}
    assert onnx_providers_from_env(gpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    env = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://x", "TRITON_GRPC_URL": "x:1"}
    assert Settings.from_env({**env, **gpu}).onnx_providers == onnx_providers_from_env(gpu)
    session = SessionCache(1).get(replicas[0] / layout.MOUTH_ONNX)
    assert session.get_providers() == list(cpu)
    assert open_session(replicas[0] / layout.MOUTH_ONNX).get_providers() == list(cpu)


class CountingRuns:
    """Wraps sessions to count ONNX Runtime calls and their batch sizes."""

    def __init__(self) -> None:
        self.runs: list[tuple[Path, int]] = []

    def __call__(self, path: Path) -> object:
        inner = SessionCache(1).get(path)
        runs = self.runs

        class Session:
            def run(self, names, feeds):
                runs.append((path, len(next(iter(feeds.values())))))
                return inner.run(names, feeds)

        return Session()


def test_render_batch_runs_each_replica_once_and_isolates_errors(
    replicas: list[Path], tmp_path: Path
) -> None:
    ada, bo, _ = replicas
    counting = CountingRuns()
    cache = SessionCache(4, loader=counting)
    x = [frames(k, seed=k) for k in (1, 2, 1, 3)]
    one = np.array([[str(ada).encode()]], dtype=np.object_)
    results = rm.render_batch(
        cache,
        [
            (np.repeat(one, 1, axis=0), x[0]),
            (np.array([[str(bo).encode()]] * 2, dtype=np.object_), x[1]),
            (str(tmp_path), x[2]),  # a folder without renderer.onnx
            (np.repeat(one, 3, axis=0), x[3]),
            (one, np.zeros((1, 7, 96, 96), np.uint8)),  # wrong shape
            (b"relative/ada", x[2]),
        ],
    )
    np.testing.assert_array_equal(
        results[0], local(ada / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x[0]})
    )
    np.testing.assert_array_equal(
        results[1], local(bo / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x[1]})
    )
    np.testing.assert_array_equal(
        results[3], local(ada / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x[3]})
    )
    assert isinstance(results[2], ValueError) and "train the replica first" in str(results[2])
    assert isinstance(results[4], ValueError) and "INPUT must be" in str(results[4])
    assert isinstance(results[5], ValueError) and "relative path" in str(results[5])
    # One ONNX Runtime call per replica: ada's two requests (1 + 3 frames) ran together.
    assert sorted(counting.runs) == sorted(
        [(ada / layout.RENDERER_ONNX, 4), (bo / layout.RENDERER_ONNX, 2)]
    )


def test_mouth_batch(replicas: list[Path]) -> None:
    ada, bo, _ = replicas
    cache = SessionCache(2)
    feats = np.random.default_rng(0).standard_normal((1, 37, 512)).astype(np.float32)
    a, b, bad = rm.mouth_batch(
        cache,
        [(str(ada), feats), (str(bo).encode(), feats[:, :5]), (str(ada), feats[0])],
    )
    np.testing.assert_allclose(
        a, local(ada / layout.MOUTH_ONNX, {layout.MOUTH_INPUT: feats}), atol=1e-6
    )
    assert isinstance(b, np.ndarray) and b.shape == (1, 5, 53, 2)
    assert isinstance(bad, ValueError) and "[1, T, 512]" in str(bad)


# --- through Triton ---------------------------------------------------------------------------


@pytest.fixture
async def triton(settings: Settings):
    client = TritonClient(settings.triton_grpc_url)
    yield client
    await client.close()


async def _counts(triton: TritonClient, model: str) -> tuple[int, int]:
    """(requests, model executions) Triton has counted for `model`."""
    stats = await triton._client.get_inference_statistics(model, as_json=True)
    s = stats["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


async def test_talking_head_renders_like_onnx_runtime(
    triton: TritonClient, replicas: list[Path]
) -> None:
    for i, replica in enumerate(replicas):
        x = frames(5, seed=10 + i)
        got = await triton.render_faces(replica, x)
        assert got.dtype == np.uint8 and got.shape == (5, 3, S, S)
        np.testing.assert_array_equal(
            got, local(replica / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x})
        )


def write_int8_stand_in(folder: Path, scale: float) -> Path:
    """A renderer.int8.onnx that differs from the folder's renderer.onnx, so a test can tell
    which graph ran (real ones come from doppel.replica.onnx.quantize_renderer).
    """
    scratch = folder / "int8-build"
    scratch.mkdir(exist_ok=True)
    built = write_renderer(scratch, scale)
    path = folder / layout.RENDERER_INT8
    os.replace(built, path)
    scratch.rmdir()
    return path


def test_renderer_file_prefers_int8_only_where_asked_and_present(tmp_path: Path) -> None:
    folder = make_replica(tmp_path / "dee", 1.0, 0.0, seed=4)
    assert rm.renderer_file(str(folder)) == folder / layout.RENDERER_ONNX  # none written yet
    int8 = write_int8_stand_in(folder, 0.5)
    assert rm.renderer_file(str(folder)) == int8
    assert rm.renderer_file(str(folder), "float") == folder / layout.RENDERER_ONNX
    with pytest.raises(ValueError, match="precision"):
        rm.renderer_file(str(folder), "fp8")
    (folder / layout.RENDERER_ONNX).unlink()  # an int8 graph alone is not a trained replica
    with pytest.raises(ValueError, match="renderer.onnx is missing"):
        rm.renderer_file(str(folder))


async def test_talking_head_serves_the_int8_renderer_where_a_replica_has_one(
    triton: TritonClient, tmp_path: Path
) -> None:
    folder = make_replica(tmp_path / "eve", 1.0, 0.0, seed=5)
    int8 = write_int8_stand_in(folder, 0.5)
    x = frames(3, seed=30)
    got = await triton.render_faces(folder, x)
    np.testing.assert_array_equal(got, local(int8, {layout.RENDERER_INPUT: x}))
    assert not np.array_equal(got, local(folder / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x}))


async def test_interleaved_replicas_come_back_to_their_callers(
    triton: TritonClient, replicas: list[Path]
) -> None:
    ada, bo, _ = replicas
    xa, xb = frames(40, seed=1), frames(40, seed=2)
    before = await _counts(triton, "talking_head")
    got_a, got_b, *singles = await asyncio.gather(
        triton.render_faces(ada, xa),
        triton.render_faces(bo, xb),
        # and single frames of either, in between
        *(triton.render_faces(ada if i % 2 else bo, xa[i : i + 1]) for i in range(8)),
    )
    # Triton records statistics after it answers: give the last batch a moment to be counted.
    for _ in range(50):
        after = await _counts(triton, "talking_head")
        if after[0] - before[0] >= 88:
            break
        await asyncio.sleep(0.1)
    np.testing.assert_array_equal(
        got_a, local(ada / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: xa})
    )
    np.testing.assert_array_equal(
        got_b, local(bo / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: xb})
    )
    for i, single in enumerate(singles):
        want = local(
            (ada if i % 2 else bo) / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: xa[i : i + 1]}
        )
        np.testing.assert_array_equal(single, want)
    requests, executions = after[0] - before[0], after[1] - before[1]
    assert requests == 88
    assert executions < requests, "the dynamic batcher never batched two frames"


async def test_mouth_motion(triton: TritonClient, replicas: list[Path]) -> None:
    for i, replica in enumerate(replicas[:2]):
        feats = np.random.default_rng(i).standard_normal((50 + 13 * i, 512)).astype(np.float32)
        got = await triton.mouth_points(replica, feats)
        want = local(replica / layout.MOUTH_ONNX, {layout.MOUTH_INPUT: feats[None]})[0]
        assert got.shape == (50 + 13 * i, 53, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6)


async def test_missing_replica_says_which_file(triton: TritonClient, tmp_path: Path) -> None:
    with pytest.raises(InferenceFailed) as info:
        await triton.render_faces(tmp_path, frames(3, seed=0))
    assert str(tmp_path / layout.RENDERER_ONNX) in info.value.message
    assert "train the replica first" in info.value.message
    with pytest.raises(InferenceFailed, match="mouth.onnx is missing: train the replica first"):
        await triton.mouth_points(tmp_path, np.zeros((4, 512), np.float32))
    with pytest.raises(InferenceFailed, match="relative path"):
        await triton.mouth_points(Path("replicas/ada"), np.zeros((4, 512), np.float32))


async def test_bad_requests_do_not_poison_the_batch(
    triton: TritonClient, replicas: list[Path], tmp_path: Path
) -> None:
    ada = replicas[0]
    x = frames(12, seed=5)
    name = np.array([[str(ada).encode()]], dtype=np.object_)
    bad = [
        # no renderer in that folder
        triton.infer(
            "talking_head",
            {
                layout.RENDERER_INPUT: x[:1],
                layout.REPLICA_INPUT: np.array([[str(tmp_path).encode()]], dtype=np.object_),
            },
            [layout.RENDERER_OUTPUT],
        ),
        # wrong frame size (Triton refuses it against the config)
        triton.infer(
            "talking_head",
            {layout.RENDERER_INPUT: np.zeros((1, 7, 96, 96), np.uint8), layout.REPLICA_INPUT: name},
            [layout.RENDERER_OUTPUT],
        ),
        # two frames naming two replicas in one request
        triton.infer(
            "talking_head",
            {
                layout.RENDERER_INPUT: x[:2],
                layout.REPLICA_INPUT: np.array(
                    [[str(ada).encode()], [str(replicas[1]).encode()]], np.object_
                ),
            },
            [layout.RENDERER_OUTPUT],
        ),
    ]
    good = [triton.render_faces(ada, x[i : i + 1]) for i in range(len(x))]
    # Interleave them so they share the dynamic batcher's queue.
    outcome = await asyncio.gather(*bad, *good, return_exceptions=True)
    errors, images = outcome[: len(bad)], outcome[len(bad) :]
    assert all(isinstance(e, InferenceFailed) for e in errors), errors
    assert "train the replica first" in str(errors[0])
    assert "one request must name one replica" in str(errors[2])
    np.testing.assert_array_equal(
        np.concatenate(images), local(ada / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x})
    )


async def test_retrained_replica_is_served_without_a_restart(
    triton: TritonClient, tmp_path: Path
) -> None:
    replica = make_replica(tmp_path / "dee", 0.5, 0.0, seed=4)
    x = frames(2, seed=9)
    before = await triton.render_faces(replica, x)
    write_renderer(replica, 0.125, 50.0)  # retrained
    after = await triton.render_faces(replica, x)
    np.testing.assert_array_equal(
        after, local(replica / layout.RENDERER_ONNX, {layout.RENDERER_INPUT: x})
    )
    assert not np.array_equal(before, after)
