"""Load-test Triton models with perf_analyzer (from tritonclient 2.51.0) over gRPC.

For each model: real input data (JFK's speech for audio models), a concurrency sweep, p50/p95
latency and throughput, with dynamic batching on (the shipped config) and, with `--batching
both`, off (the same config minus its `dynamic_batching` block, served by a second Triton on a
copy of the repository). Results go to `benchmarks/results/perf_<model>.md` and stdout.

    python -m benchmarks.triton.perf stt --concurrency 1:4 --batching both

Uses the Triton of `TRITON_GRPC_URL` when set (batching "on" only); otherwise starts its own
with the same launcher as `make up`, on free ports, and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from doppel.audio import media
from doppel.platform.stack import LocalPlatform
from doppel.settings import REPO_ROOT

SHARED_DATA = Path(os.environ.get("DOPPEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results"


def _jfk_16k() -> np.ndarray:
    return asyncio.run(media.decode_audio(SHARED_DATA / "speech" / "jfk.flac")).samples


@dataclasses.dataclass(frozen=True)
class PerfCase:
    """What perf_analyzer sends to one model: one real request's inputs."""

    model: str
    make_inputs: Callable[[], dict[str, np.ndarray]]
    #: Models an ensemble or BLS model calls, loaded beside it.
    composing: tuple[str, ...] = ()


#: A trained replica for the per-replica models (`make quality` trains this one).
PERF_REPLICA = Path(
    os.environ.get(
        "DOPPEL_PERF_REPLICA", Path.home() / ".cache" / "doppel" / "quality" / "replica_obama"
    )
)


def _talking_head_inputs() -> dict[str, np.ndarray]:
    """One real frame's renderer input (the replica's own crops) and the replica folder."""
    from doppel.face import regions
    from doppel.replica import layout
    from doppel.replica.artefact import Replica

    if not (PERF_REPLICA / layout.RENDERER_ONNX).exists():
        raise FileNotFoundError(
            f"talking_head needs a trained replica and {PERF_REPLICA} has none: run "
            "`make quality` (or set DOPPEL_PERF_REPLICA to a replica folder)"
        )
    bank = Replica.load(PERF_REPLICA).bank()
    j = len(bank.crops) // 2
    frame = regions.make_input(
        bank.crops[0],
        bank.points[1],
        bank.crops[j],
        bank.points[j],
        regions.frame_mask(bank.points[0, :53]),
    )
    return {
        layout.RENDERER_INPUT: frame,
        layout.REPLICA_INPUT: np.array([str(PERF_REPLICA).encode()], dtype=np.object_),
    }


TTS_SENTENCE = (
    "The invention of movable metal letters in the middle of the fifteenth century may justly "
    "be considered as the invention of the art of printing."
)

#: Models with a load test. Later models register here with their own real inputs.
CASES: dict[str, PerfCase] = {
    "stt": PerfCase("stt", lambda: {"AUDIO": _jfk_16k()}),
    # A live call's 512 ms piece of speech.
    "vad": PerfCase("vad", lambda: {"AUDIO": _jfk_16k()[16000 : 16000 + 8192]}),
    # One real sentence of text (an LJ Speech transcript), about 7 s of speech.
    "tts": PerfCase("tts", lambda: {"TEXT": np.array([TTS_SENTENCE.encode()], dtype=np.object_)}),
    # JFK's 11 s (one 30 s encoder window): the lip-sync features of a spoken paragraph.
    "audio_encoder": PerfCase("audio_encoder", lambda: {"AUDIO": _jfk_16k()}),
    # Text to audio + frame features in one call (BLS over tts and audio_encoder).
    "speech_features": PerfCase(
        "speech_features",
        lambda: {"TEXT": np.array([TTS_SENTENCE.encode()], dtype=np.object_)},
        composing=("tts", "audio_encoder"),
    ),
    # One video frame of a trained replica (frames of a render arrive as separate requests).
    "talking_head": PerfCase("talking_head", _talking_head_inputs),
}


def write_input_data(case: PerfCase, folder: Path) -> tuple[Path, list[str]]:
    """perf_analyzer's JSON input file, and the --shape flags for its variable dimensions."""
    inputs = case.make_inputs()
    entry: dict[str, object] = {}
    shapes = []
    for name, array in inputs.items():
        if array.dtype == np.object_:
            content: list[object] = [v.decode() if isinstance(v, bytes) else v for v in array.flat]
        else:
            content = array.reshape(-1).tolist()
        entry[name] = {"content": content, "shape": list(array.shape)}
        shapes.append(f"--shape={name}:{','.join(map(str, array.shape))}")
    path = folder / f"{case.model}_input.json"
    path.write_text(json.dumps({"data": [entry]}))
    return path, shapes


def strip_dynamic_batching(config: str) -> str:
    """The same config without its `dynamic_batching { ... }` block (nested braces allowed)."""
    start = config.find("dynamic_batching")
    if start < 0:
        return config
    depth, i = 0, config.index("{", start)
    while True:
        if config[i] == "{":
            depth += 1
        elif config[i] == "}":
            depth -= 1
            if depth == 0:
                return config[:start] + config[i + 1 :]
        i += 1


@contextmanager
def triton(repository: Path, run_dir: Path) -> Iterator[str]:
    platform = LocalPlatform(run_dir, model_repository=repository)
    try:
        yield platform.start_triton(fixed_ports=False)["triton_grpc"]
    finally:
        platform.down()


def perf_analyzer_env() -> dict[str, str]:
    import nvidia.cuda_runtime

    # perf_analyzer links libcudart even for CPU-only runs; the PyPI runtime package has it.
    cudart = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(cudart), env.get("LD_LIBRARY_PATH")]))
    return env


def run_perf_analyzer(
    model: str,
    grpc_url: str,
    data: Path,
    shapes: list[str],
    concurrency: str,
    out_csv: Path,
    measurement_ms: int,
) -> list[dict[str, str]]:
    binary = Path(sys.executable).parent / "perf_analyzer"
    argv = [
        str(binary),
        "-m",
        model,
        "-u",
        grpc_url,
        "-i",
        "grpc",
        f"--input-data={data}",
        *shapes,
        f"--concurrency-range={concurrency}",
        f"--measurement-interval={measurement_ms}",
        # Shared 2-core machines are noisy (other processes come and go): a window is accepted
        # unless it differs by 3x from the last ones, else a run never "stabilises".
        "--stability-percentage=300",
        "--max-trials=4",
        "--percentile=95",
        "-f",
        str(out_csv),
    ]
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, env=perf_analyzer_env())
    with out_csv.open() as fh:
        return list(csv.DictReader(fh))


def table(model: str, results: dict[str, list[dict[str, str]]]) -> str:
    lines = [
        f"### {model}",
        "",
        "| dynamic batching | concurrency | throughput (infer/s) | p50 (ms) | p95 (ms) |",
        "|---|---|---|---|---|",
    ]
    for mode, rows in results.items():
        for row in sorted(rows, key=lambda r: int(r["Concurrency"])):
            lines.append(
                f"| {mode} | {row['Concurrency']} | {float(row['Inferences/Second']):.2f} "
                f"| {int(row['p50 latency']) / 1000:.0f} | {int(row['p95 latency']) / 1000:.0f} |"
            )
    if {"on", "off"} <= results.keys():
        on = {r["Concurrency"]: float(r["Inferences/Second"]) for r in results["on"]}
        off = {r["Concurrency"]: float(r["Inferences/Second"]) for r in results["off"]}
        top = max(set(on) & set(off), key=int)
        lines += [
            "",
            f"Throughput ratio on/off at concurrency {top}: **{on[top] / off[top]:.2f}x**",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triton.perf")
    parser.add_argument("models", nargs="*", default=sorted(CASES))
    parser.add_argument("--concurrency", default="1:4", help="perf_analyzer range start:end[:step]")
    parser.add_argument("--batching", choices=["on", "off", "both"], default="on")
    parser.add_argument("--measurement-ms", type=int, default=8000)
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "speech" / "jfk.flac").exists():
        print(f"needs the real test data in {SHARED_DATA}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    modes = ["on", "off"] if args.batching == "both" else [args.batching]
    with tempfile.TemporaryDirectory(prefix="doppel-perf-") as tmp:
        work = Path(tmp)
        for model in args.models:
            case = CASES[model]
            try:
                data, shapes = write_input_data(case, work)
            except FileNotFoundError as exc:
                print(f"{model}: skipped: {exc}", file=sys.stderr)
                continue
            results: dict[str, list[dict[str, str]]] = {}
            for mode in modes:
                # A repository of this model (and the models it calls) alone, so both modes
                # load the same thing and nothing else competes for the cores.
                repo = work / f"repo_{model}_{mode}"
                for name in (model, *case.composing):
                    shutil.copytree(REPO_ROOT / "model_repository" / name, repo / name)
                if mode == "off":
                    cfg = repo / model / "config.pbtxt"
                    cfg.write_text(strip_dynamic_batching(cfg.read_text()))
                out_csv = work / f"{model}_{mode}.csv"
                external = os.environ.get("TRITON_GRPC_URL")
                if external and mode == "on":
                    rows = run_perf_analyzer(
                        model,
                        external,
                        data,
                        shapes,
                        args.concurrency,
                        out_csv,
                        args.measurement_ms,
                    )
                else:
                    with triton(repo, work / f"run_{model}_{mode}") as url:
                        rows = run_perf_analyzer(
                            model, url, data, shapes, args.concurrency, out_csv, args.measurement_ms
                        )
                results[mode] = rows
            report = table(model, results)
            (RESULTS / f"perf_{model}.md").write_text(report)
            print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
