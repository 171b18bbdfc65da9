"""PyTorch -> ONNX, and the parity check of an exported graph against PyTorch: the one exporter.

Training exports each replica's graphs with it (doppel.replica.onnx) and `export/` the
platform's models (through their `ModelSpec`); both trace the same way and check the same way.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doppel.platform.sessions import open_session
from doppel.settings import CPU_PROVIDERS


class ParityError(AssertionError):
    """An exported graph's outputs differ from PyTorch's beyond the stated tolerance."""


@dataclasses.dataclass(frozen=True)
class Parity:
    output: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    reference: str = "PyTorch"

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.atol or self.max_rel <= self.rtol

    def line(self, runtime: str) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{runtime} vs {self.reference} {self.output}: max abs {self.max_abs:.3g} "
            f"(tol {self.atol:g}), max rel {self.max_rel:.3g} (tol {self.rtol:g}) {verdict}"
        )


def _tensors(inputs: Mapping[str, Any]) -> tuple[Any, ...]:
    import torch

    return tuple(
        v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
        for v in inputs.values()
    )


def export_onnx(
    module: Any,
    sample: Mapping[str, Any],
    path: Path,
    *,
    outputs: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = 17,
    quiet: bool = False,
) -> Path:
    """Trace `module` on `sample` (input name -> numpy array or tensor, in the module's argument
    order) into `path`, written whole or not at all; `quiet` hides the tracer's warnings.
    """
    import onnx
    import torch

    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            _tensors(sample),
            str(tmp),
            input_names=list(sample),
            output_names=list(outputs),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)
    return path


def torch_outputs(
    module: Any, inputs: Mapping[str, Any], outputs: Sequence[str]
) -> dict[str, np.ndarray]:
    """`module` run on `inputs` (in argument order), its results named `outputs`."""
    import torch

    with torch.no_grad():
        out = module(*_tensors(inputs))
    if not isinstance(out, tuple | list):
        out = (out,)
    return {name: o.detach().cpu().numpy() for name, o in zip(outputs, out, strict=True)}


def onnx_outputs(
    path: Path,
    inputs: Mapping[str, np.ndarray],
    threads: int = 2,
    providers: Sequence[str] = CPU_PROVIDERS,
) -> dict[str, np.ndarray]:
    """Every output of the graph at `path` run by ONNX Runtime on `inputs`."""
    session = open_session(path, threads=threads, providers=providers)
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(names, feed), strict=True))


def max_difference(
    path: Path, feeds: Mapping[str, np.ndarray], want: np.ndarray, atol: float
) -> float:
    """The largest difference between the graph's first output on `feeds` and `want`;
    `ParityError` beyond `atol`.
    """
    got = open_session(path).run(None, dict(feeds))[0]
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    if diff > atol:
        raise ParityError(
            f"{path.name}: ONNX Runtime differs from PyTorch by {diff} (allowed {atol})"
        )
    return diff


def compare(
    name: str, expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float
) -> Parity:
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ParityError(f"{name}: shape {actual.shape} != PyTorch's {expected.shape}")
    diff = np.abs(expected - actual)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(expected).max()) if diff.size else 1.0
    return Parity(name, max_abs, max_abs / max(scale, 1e-12), atol, rtol)


def check_parity(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    runtime: str,
    atol: float,
    rtol: float,
    reference_name: str = "PyTorch",
) -> list[Parity]:
    """Compare every output; prints one line each and raises `ParityError` on any failure."""
    results = [
        dataclasses.replace(
            compare(k, reference[k], candidate[k], atol, rtol), reference=reference_name
        )
        for k in reference
    ]
    for r in results:
        print(r.line(runtime), flush=True)
    bad = [r for r in results if not r.ok]
    if bad:
        raise ParityError("; ".join(r.line(runtime) for r in bad))
    return results
