"""ONNX Runtime sessions, made in one place: threads, graph options and execution providers.

Every in-process graph (VAD, audio encoder, TTS, voice mapping, the per-replica renderer and
mouth, export parity checks) is opened by `open_session`, and the Triton Python models that
serve many graph files keep them in a `SessionCache`.

Execution providers: CPU by default. A GPU deployment sets `DOPPEL_ONNX_PROVIDERS`, a comma list
in ONNX Runtime's order of preference (e.g. `TensorrtExecutionProvider,CUDAExecutionProvider,
CPUExecutionProvider`), read once into `Settings.onnx_providers` by the entry points, which pass
it down. Triton's Python models are started by Triton, not by an entry point, and build no
`Settings` (`from_env` insists on the database and queue addresses they never use): their
`initialize` reads the same variable with `doppel.settings.onnx_providers_from_env(os.environ)`,
the parser `Settings.from_env` uses, as it already reads their cache sizes from the
environment. Every other session takes `providers` from its caller, CPU when none is given.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from doppel.settings import CPU_PROVIDERS


def open_session(
    path: str | os.PathLike[str],
    *,
    threads: int = 1,
    providers: Sequence[str] = CPU_PROVIDERS,
    arena: bool = True,
    quiet: bool = False,
) -> Any:
    """An `onnxruntime.InferenceSession` of the graph at `path`: `threads` intra-op threads and
    one inter-op thread (graphs run sequentially), `providers` in order of preference.

    `arena`: ONNX Runtime's CPU memory arena, which keeps a session's peak activation memory
    for its lifetime (off in `SessionCache`). `quiet`: warnings off (quantized graphs warn about
    every node ONNX Runtime cannot fuse).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    if quiet:
        options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers))


@dataclasses.dataclass(frozen=True)
class _Entry:
    stamp: Any
    session: Any


def file_stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class SessionCache:
    """A thread-safe LRU cache of `onnxruntime.InferenceSession`s keyed by graph file.

    Entries are keyed by the resolved path; each remembers the file's (inode, mtime_ns, size)
    when it was loaded, and a `get` that finds the file changed reloads it. `hits`, `misses`
    (loads, reloads included), `reloads` and `evictions` count what happened.

    Sessions are made without ONNX Runtime's CPU memory arena by default: an arena keeps its
    peak activation memory for the session's lifetime, so a cache of many sessions would hold
    many peaks; without it a cached session costs its weights only.
    """

    def __init__(
        self,
        capacity: int,
        *,
        threads: int = 1,
        providers: Sequence[str] = CPU_PROVIDERS,
        arena: bool = False,
        loader: Callable[[Path], Any] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"the session cache needs a capacity of at least 1, not {capacity}")
        self.capacity = capacity
        self.threads = threads
        self.providers = list(providers)
        self.arena = arena
        self._loader = loader or self._load
        self._entries: collections.OrderedDict[Path, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.reloads = 0
        self.evictions = 0

    def _load(self, path: Path) -> Any:
        return open_session(path, threads=self.threads, providers=self.providers, arena=self.arena)

    def get(self, path: str | os.PathLike[str]) -> Any:
        """The session of the graph at `path`: cached, or loaded now (evicting the least
        recently used entry beyond capacity). ValueError, naming the file, if it cannot be.
        """
        try:
            resolved = Path(path).resolve(strict=True)
            stamp = self._stamp_of(resolved)
        except OSError as exc:
            raise self._unreadable(Path(path), exc) from None
        with self._lock:
            entry = self._entries.get(resolved)
            if entry is not None and entry.stamp == stamp:
                self._entries.move_to_end(resolved)
                self.hits += 1
                return entry.session
            self.misses += 1
            if entry is not None:  # the file changed since it was loaded
                self.reloads += 1
                del self._entries[resolved]
        # Loading (hundreds of ms for a renderer) happens outside the lock; a concurrent
        # load of the same file at most does the work twice.
        try:
            session = self._loader(resolved)
        except Exception as exc:
            raise self._unloadable(resolved, exc) from None
        with self._lock:
            current = self._entries.get(resolved)
            if current is not None and current.stamp == stamp:
                self._entries.move_to_end(resolved)
                return current.session
            self._entries[resolved] = _Entry(stamp, session)
            self._entries.move_to_end(resolved)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.evictions += 1
        return session

    # What a subclass caching something else (a voice profile folder) changes:

    def _stamp_of(self, path: Path) -> Any:
        """What says the file changed since it was loaded."""
        return file_stamp(path)

    def _unreadable(self, path: Path, exc: OSError) -> Exception:
        return ValueError(f"{path} cannot be read: {exc.strerror or exc}")

    def _unloadable(self, path: Path, exc: Exception) -> Exception:
        return ValueError(
            f"{path} could not be loaded by ONNX Runtime ({exc}); train or export the replica again"
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str | os.PathLike):
            return False
        with self._lock:
            return Path(path).resolve() in self._entries

    def paths(self) -> list[Path]:
        """Cached files, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": len(self._entries),
                "capacity": self.capacity,
                "hits": self.hits,
                "misses": self.misses,
                "reloads": self.reloads,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
