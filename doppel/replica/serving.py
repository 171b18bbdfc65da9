"""Per-replica ONNX models served from one Triton model each, without restarting Triton.

The logic behind Triton's `talking_head` and `mouth_motion` models; never imports Triton.
Every trained replica is a folder (an absolute path) holding, among other files (names:
doppel.replica.layout):

- `renderer.onnx`: "INPUT" uint8 [B, 7, S, S] -> "IMAGE" uint8 [B, 3, S, S]
- `mouth.onnx`: "FEATURES" float32 [1, T, 512] -> "POINTS" float32 [1, T, 53, 2]

A request names its replica's folder; the model keeps an LRU cache of ONNX Runtime sessions
(`doppel.platform.sessions.SessionCache`), one per graph file, loaded on first use, reloaded when
the file changes (a retrained replica) and evicted least-recently-used beyond `capacity`, so
memory stays bounded however many replicas exist. Trainers should write a new graph atomically
(write elsewhere, then rename over the old file); a rename is always noticed, even within the
file system's clock tick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.platform.sessions import SessionCache
from doppel.replica.layout import (
    FEATURE_DIM,
    IMAGE_SIZE,
    INPUT_CHANNELS,
    MOUTH_INPUT,
    MOUTH_ONNX,
    MOUTH_OUTPUT,
    MOUTH_POINTS,
    OUTPUT_CHANNELS,
    RENDERER_INPUT,
    RENDERER_INT8,
    RENDERER_ONNX,
    RENDERER_OUTPUT,
)

#: The `precision` parameter: "int8" serves a replica's 8-bit renderer where it has one,
#: "float" always the float graph.
PRECISIONS = ("int8", "float")

#: Replaces the `max_replicas` config parameter of both models;
#: `DOPPEL_REPLICA_CACHE_<MODEL>` (e.g. `DOPPEL_REPLICA_CACHE_TALKING_HEAD`) of one.
CACHE_ENV = "DOPPEL_REPLICA_CACHE"


def replica_file(replica: str | bytes | os.PathLike[str], file_name: str) -> Path:
    """The graph `file_name` of the replica folder `replica`, or a ValueError saying what is
    wrong (no folder given, a relative path, no such folder, no such file).
    """
    if isinstance(replica, bytes):
        try:
            replica = replica.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"the replica folder is not valid UTF-8 ({exc})") from None
    text = os.fspath(replica)
    if not text:
        raise ValueError("no replica folder given: REPLICA must be a trained replica's folder")
    folder = Path(text)
    if not folder.is_absolute():
        raise ValueError(
            f"replica folder {text!r} is a relative path; pass the replica's absolute folder"
        )
    if not folder.is_dir():
        raise ValueError(f"replica folder {folder} does not exist (or is not a folder)")
    path = folder / file_name
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: train the replica first (training writes its {file_name})"
        )
    return path


def renderer_file(replica: str | bytes | os.PathLike[str], precision: str = "int8") -> Path:
    """The renderer graph to run for `replica`: its 8-bit one when `precision` is "int8" and
    training kept one, else the float graph (errors as `replica_file`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    path = replica_file(replica, RENDERER_ONNX)
    int8 = path.with_name(RENDERER_INT8)
    return int8 if precision == "int8" and int8.is_file() else path


def replica_name(values: Any) -> str:
    """The one replica folder named by a request's REPLICA tensor (bytes or str elements; a
    batched request of k frames carries k copies of the same folder).
    """
    if values is None:
        raise ValueError("REPLICA is missing: name the replica's folder")
    if isinstance(values, str | bytes | os.PathLike):
        items = [values]
    else:
        items = list(np.asarray(values, dtype=np.object_).reshape(-1))
    if not items:
        raise ValueError("REPLICA is empty: name the replica's folder")
    names = {os.fsdecode(v) if isinstance(v, bytes | os.PathLike) else str(v) for v in items}
    if len(names) > 1:
        raise ValueError(
            f"one request must name one replica; this one names {len(names)}: {sorted(names)}"
        )
    return names.pop()


def cache_capacity(
    model: str, params: Mapping[str, str], environ: Mapping[str, str], default: int
) -> int:
    """The cache size for `model`: `DOPPEL_REPLICA_CACHE_<MODEL>`, else `DOPPEL_REPLICA_CACHE`,
    else the config's `max_replicas`, else `default`.
    """
    for source, value in (
        (f"{CACHE_ENV}_{model.upper()}", environ.get(f"{CACHE_ENV}_{model.upper()}")),
        (CACHE_ENV, environ.get(CACHE_ENV)),
        ("max_replicas", params.get("max_replicas")),
    ):
        if value is None or not str(value).strip():
            continue
        try:
            capacity = int(value)
        except ValueError:
            raise ValueError(f"{source}={value!r} is not a whole number of replicas") from None
        if capacity < 1:
            raise ValueError(f"{source}={value!r}: the cache needs at least 1 replica")
        return capacity
    return default


def _frames_shape() -> tuple[int, int, int]:
    return (INPUT_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Renderer input: uint8 [B, 7, S, S] (B >= 1), or a ValueError saying what is wrong."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"INPUT must be uint8, not {frames.dtype}")
    if frames.ndim != 4 or frames.shape[1:] != _frames_shape() or frames.shape[0] < 1:
        raise ValueError(
            f"INPUT must be [B, {INPUT_CHANNELS}, {IMAGE_SIZE}, {IMAGE_SIZE}], "
            f"not {list(frames.shape)}"
        )
    return np.ascontiguousarray(frames)


def check_features(features: np.ndarray) -> np.ndarray:
    """Mouth input: float32 [1, T, 512] (T >= 1), or a ValueError saying what is wrong."""
    features = np.asarray(features)
    if features.dtype != np.float32:
        raise ValueError(f"FEATURES must be float32, not {features.dtype}")
    if features.ndim != 3 or features.shape[0] != 1 or features.shape[2] != FEATURE_DIM:
        raise ValueError(f"FEATURES must be [1, T, {FEATURE_DIM}], not {list(features.shape)}")
    if features.shape[1] < 1:
        raise ValueError("FEATURES has no frames (T = 0)")
    return np.ascontiguousarray(features)


def run_renderer(session: Any, frames: np.ndarray) -> np.ndarray:
    """One renderer run: uint8 [B, 7, S, S] -> uint8 [B, 3, S, S]."""
    frames = check_frames(frames)
    (image,) = session.run([RENDERER_OUTPUT], {RENDERER_INPUT: frames})
    expected = (frames.shape[0], OUTPUT_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    if image.dtype != np.uint8 or image.shape != expected:
        raise ValueError(
            f"the renderer returned IMAGE {image.dtype} {list(image.shape)}, "
            f"expected uint8 {list(expected)}"
        )
    return np.asarray(image)


def run_mouth(session: Any, features: np.ndarray) -> np.ndarray:
    """One mouth run: float32 [1, T, 512] -> float32 [1, T, 53, 2]."""
    features = check_features(features)
    (points,) = session.run([MOUTH_OUTPUT], {MOUTH_INPUT: features})
    expected = (1, features.shape[1], MOUTH_POINTS, 2)
    if points.dtype != np.float32 or points.shape != expected:
        raise ValueError(
            f"the mouth model returned POINTS {points.dtype} {list(points.shape)}, "
            f"expected float32 {list(expected)}"
        )
    return np.asarray(points)


#: What a batch function returns per request: its output, or the error to answer it with.
Result = np.ndarray | Exception


def render_batch(
    cache: SessionCache, requests: Sequence[tuple[Any, np.ndarray]], precision: str = "int8"
) -> list[Result]:
    """Render the requests of one Triton batch: (REPLICA, INPUT [k, 7, S, S]) each, with each
    replica's graph of `precision` (`renderer_file`).

    Requests are grouped by replica and each group's frames run as one ONNX Runtime call
    (concatenated along B). Results come back in request order; a request that cannot be
    served (bad folder, missing file, wrong shape) gets its own ValueError, and a failing
    replica fails only its own group, never the other requests of the batch.
    """
    results: list[Result | None] = [None] * len(requests)
    groups: dict[Path, list[tuple[int, np.ndarray]]] = {}
    for i, (replica, frames) in enumerate(requests):
        try:
            path = renderer_file(replica_name(replica), precision)
            groups.setdefault(path, []).append((i, check_frames(frames)))
        except Exception as exc:
            results[i] = exc
    for path, items in groups.items():
        try:
            session = cache.get(path)
            images = run_renderer(session, np.concatenate([f for _, f in items]))
        except Exception as exc:
            for i, _ in items:
                results[i] = exc
            continue
        start = 0
        for i, frames in items:
            results[i] = images[start : start + len(frames)]
            start += len(frames)
    return [r if r is not None else RuntimeError("no result") for r in results]


def mouth_batch(cache: SessionCache, requests: Sequence[tuple[Any, np.ndarray]]) -> list[Result]:
    """Mouth points for each (REPLICA, FEATURES [1, T, 512]) request, one run each (lengths
    differ); each request fails on its own.
    """
    results: list[Result] = []
    for replica, features in requests:
        try:
            path = replica_file(replica_name(replica), MOUTH_ONNX)
            results.append(run_mouth(cache.get(path), check_features(features)))
        except Exception as exc:
            results.append(exc)
    return results
