"""PyTorch -> ONNX with the spec's names and dynamic axes, and the parity check against PyTorch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from export.spec import ModelSpec


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


def export_onnx(module, spec: ModelSpec, sample: Mapping[str, np.ndarray], path: Path) -> Path:
    """Trace `module` on `sample` (numpy inputs, batch dim included if batched) into `path`."""
    import torch

    module.eval()
    args = tuple(
        torch.from_numpy(np.ascontiguousarray(sample[t.name]))
        for t in spec.inputs
        if t.name in sample
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=[t.name for t in spec.inputs if t.name in sample],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes=spec.onnx_dynamic_axes(),
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(tmp))
    tmp.rename(path)
    return path


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


def torch_outputs(
    module, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(
            *(
                torch.from_numpy(np.ascontiguousarray(inputs[t.name]))
                for t in spec.inputs
                if t.name in inputs
            )
        )
    if not isinstance(out, (tuple, list)):
        out = (out,)
    return {t.name: o.detach().cpu().numpy() for t, o in zip(spec.outputs, out, strict=True)}


def onnx_outputs(
    path: Path, inputs: Mapping[str, np.ndarray], threads: int = 2
) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(names, feed), strict=True))


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
