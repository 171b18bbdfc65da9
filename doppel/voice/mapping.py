"""The voice conversion's MLP ensemble (with its input normalisation and context window) as one
ONNX graph: what Triton's `voice` models run (`onnx_mapper`), checked against the numpy
mapping when exported (`export_mapping`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from doppel.voice.conversion import CONTEXT, Conversion
from doppel.voice.world import CODED_DIMS

#: The graph's input (coded envelopes [T, CODED_DIMS], float32) and output (the MLP's
#: target-normalised shape [T, CODED_DIMS - 1], float32): `Conversion.map_coded` exactly.
MAPPING_INPUT, MAPPING_OUTPUT = "CODED", "MAPPED"
#: Allowed ONNX Runtime vs PyTorch difference (normalised units, values ~N(0, 1)).
MAPPING_ATOL = 1e-4


def mapping_module(conv: Conversion):  # type: ignore[no-untyped-def]
    """`conv.map_coded` as a PyTorch module: normalisation, edge-padded context window, MLP."""
    import torch
    from torch import nn

    class Mapping(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(conv.src_mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(conv.src_std, dtype=torch.float32))
            mlps = []
            for w in conv.member_weights():
                layers: list[nn.Module] = []
                for i in range(0, len(w), 2):
                    linear = nn.Linear(int(w[i].shape[0]), int(w[i].shape[1]))
                    linear.weight.data = torch.tensor(w[i].T, dtype=torch.float32)
                    linear.bias.data = torch.tensor(w[i + 1], dtype=torch.float32)
                    layers.append(linear)
                    if i < len(w) - 2:
                        layers.append(nn.ReLU())
                mlps.append(nn.Sequential(*layers))
            self.mlps = nn.ModuleList(mlps)

        def forward(self, coded):  # type: ignore[no-untyped-def]
            x = (coded - self.mean) / self.std
            # context_window: edges repeated, then each frame with its neighbours. Slices with
            # constant (negative) ends keep the graph valid for any number of frames.
            padded = torch.cat([x[:1].repeat(CONTEXT, 1), x, x[-1:].repeat(CONTEXT, 1)])
            width = 2 * CONTEXT
            h = torch.cat([padded[i : (i - width) or None] for i in range(width + 1)], dim=1)
            out = self.mlps[0](h)
            for mlp in self.mlps[1:]:
                out = out + mlp(h)
            return out / len(self.mlps)

    return Mapping().eval()


def export_mapping(conv: Conversion, path: Path) -> float:
    """Write the MLP as ONNX to `path` (atomically: a temporary file renamed over it), checked
    against PyTorch and against `map_coded`; returns ONNX Runtime's max difference from PyTorch.
    """
    import os

    import torch

    from doppel.platform.onnx_export import export_onnx
    from doppel.platform.sessions import open_session

    module = mapping_module(conv)
    rng = np.random.default_rng(0)
    sample = (rng.standard_normal((400, CODED_DIMS)) * conv.src_std + conv.src_mean).astype(
        np.float32
    )
    with torch.no_grad():
        want = module(torch.from_numpy(sample)).numpy()
    numpy_diff = float(np.abs(conv.map_coded(sample.astype(np.float64)) - want).max())
    if numpy_diff > 1e-3:
        raise AssertionError(f"the mapping module differs from map_coded by {numpy_diff}")
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    axes = {0: "frames"}
    export_onnx(  # quiet: the legacy exporter's deprecation notices
        module,
        {MAPPING_INPUT: sample[:50]},
        tmp,
        outputs=[MAPPING_OUTPUT],
        dynamic_axes={MAPPING_INPUT: axes, MAPPING_OUTPUT: axes},
        quiet=True,
    )
    try:
        # Parity on another length than the traced one: the frame axis must stay dynamic.
        session = open_session(tmp)
        diff = float(np.abs(onnx_mapper(session)(sample) - want).max())
        if diff > MAPPING_ATOL:
            raise AssertionError(
                f"{path.name}: ONNX Runtime differs from PyTorch by {diff} (allowed {MAPPING_ATOL})"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return diff


def onnx_mapper(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`map_coded` through an ONNX Runtime session of `export_mapping`'s graph."""

    def run(coded: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(coded, dtype=np.float32)
        (mapped,) = session.run([MAPPING_OUTPUT], {MAPPING_INPUT: x})
        return np.asarray(mapped)

    return run
