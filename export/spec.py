"""One IO spec per model: the single source for ONNX names and dynamic axes, TensorRT
optimisation profiles and the Triton `config.pbtxt` (CPU and GPU targets).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: numpy dtype name -> Triton config data type.
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
    "bytes": "TYPE_STRING",
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model, per request (the batch dimension is not listed).

    `shape` holds ints for fixed dimensions and names for dynamic ones; `min`, `opt`, `max`
    give each dynamic dimension's range (TensorRT profiles, warm-up and perf inputs use them).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    min: Mapping[str, int] = dataclasses.field(default_factory=dict)
    opt: Mapping[str, int] = dataclasses.field(default_factory=dict)
    max: Mapping[str, int] = dataclasses.field(default_factory=dict)
    optional: bool = False
    #: Requests of different lengths may share a batch (Python backend handles the ragged list).
    ragged: bool = False

    def dims(self, which: str = "opt") -> tuple[int, ...]:
        table = {"min": self.min, "opt": self.opt, "max": self.max}[which]
        return tuple(d if isinstance(d, int) else int(table[d]) for d in self.shape)

    def triton_dims(self) -> str:
        return ", ".join(str(d) if isinstance(d, int) else "-1" for d in self.shape)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: 0 disables Triton batching; > 0 adds a leading batch dimension everywhere.
    max_batch_size: int = 0
    description: str = ""
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000
    #: Instances on the CPU target: 2 cores, so one instance with intra-op threads, by default.
    cpu_instances: int = 1
    gpu_instances: int = 1
    decoupled: bool = False
    #: Key/value parameters handed to model.py (CPU target).
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: ONNX opset pinned for the export.
    opset: int = 17
    #: Whether the graph can run as a TensorRT plan on the GPU target.
    tensorrt: bool = True
    #: Comments per config section, explaining non-default settings: "max_batch_size",
    #: "dynamic_batching", "instance_group", "parameters", and "model_warmup" (why there is
    #: none, when `warmup` is False).
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    warmup: bool = True
    #: How numeric warm-up inputs are filled: "random_data" or "zero_data" (silence, for speech
    #: models that would otherwise decode noise for a long time).
    warmup_fill: str = "random_data"
    #: What a TYPE_STRING input says at warm-up (written to `warmup/warmup_text`).
    warmup_text: str = "Hello."

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        offset = 1 if self.batched else 0
        for t in (*self.inputs, *self.outputs):
            entry = {0: "batch"} if self.batched else {}
            for i, d in enumerate(t.shape):
                if isinstance(d, str):
                    entry[i + offset] = d
            if entry:
                axes[t.name] = entry
        return axes

    def ordered(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` of this model's inputs in the graph's argument order (absent ones left out)."""
        return {t.name: values[t.name] for t in self.inputs if t.name in values}

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def export_onnx(self, module: Any, sample: Mapping[str, Any], path: Path) -> Path:
        """Trace `module` on `sample` (numpy inputs, batch dim included if batched) into `path`
        with this spec's names, dynamic axes and opset (doppel.platform.onnx_export).
        """
        from doppel.platform.onnx_export import export_onnx

        return export_onnx(
            module,
            self.ordered(sample),
            path,
            outputs=self.output_names,
            dynamic_axes=self.onnx_dynamic_axes(),
            opset=self.opset,
        )

    def torch_outputs(self, module: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """PyTorch's outputs of `module` on `inputs`, named as this spec names them."""
        from doppel.platform.onnx_export import torch_outputs

        return torch_outputs(module, self.ordered(inputs), self.output_names)

    def trt_profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """min/opt/max shapes per input, batch dimension included (1 / max/2 / max)."""
        out = {}
        for t in self.inputs:
            if self.batched:
                b = (1, max(1, self.max_batch_size // 2), self.max_batch_size)
                out[t.name] = tuple((b[i], *t.dims(w)) for i, w in enumerate(("min", "opt", "max")))
            else:
                out[t.name] = (t.dims("min"), t.dims("opt"), t.dims("max"))
        return out  # type: ignore[return-value]


def _comment(text: str, indent: str = "") -> str:
    return "".join(f"{indent}# {line}\n" for line in text.splitlines()) if text else ""


def _tensor_block(kind: str, tensors: tuple[TensorSpec, ...]) -> str:
    rows = []
    for t in tensors:
        extra = ""
        if t.optional:
            extra += "\n    optional: true"
        if t.ragged and kind == "input":
            extra += "\n    allow_ragged_batch: true"
        rows.append(
            f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_DTYPES[t.dtype]}\n'
            f"    dims: [ {t.triton_dims()} ]{extra}\n  }}"
        )
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def render_config(spec: ModelSpec, target: str = "cpu") -> str:
    """The Triton config for `target` ("cpu": Python backend; "gpu": TensorRT plan)."""
    gpu = target == "gpu" and spec.tensorrt
    out = [
        f"# Generated by `python -m export {spec.name} --target {target}` from export/ "
        "(do not edit by hand).\n",
        _comment(spec.description),
    ]
    out.append(f'name: "{spec.name}"\n')
    out.append('platform: "tensorrt_plan"\n' if gpu else 'backend: "python"\n')
    out.append(_comment(spec.notes.get("max_batch_size", "")))
    out.append(f"max_batch_size: {spec.max_batch_size}\n")
    out.append(_tensor_block("input", spec.inputs))
    out.append(_tensor_block("output", spec.outputs))
    if spec.decoupled:
        out.append("# Decoupled: any number of responses per request (streams over gRPC only).\n")
        out.append("model_transaction_policy { decoupled: true }\n")
    if spec.batched and spec.dynamic_batching:
        out.append(_comment(spec.notes.get("dynamic_batching", "")))
        pref = ""
        if spec.preferred_batch_sizes:
            pref = (
                f"  preferred_batch_size: [ {', '.join(map(str, spec.preferred_batch_sizes))} ]\n"
            )
        out.append(
            f"dynamic_batching {{\n{pref}"
            f"  max_queue_delay_microseconds: {spec.max_queue_delay_us}\n}}\n"
        )
    count = spec.gpu_instances if gpu else spec.cpu_instances
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    out.append(_comment(spec.notes.get("instance_group", "")))
    out.append(f"instance_group [ {{ count: {count}, kind: {kind} }} ]\n")
    if not gpu:
        if spec.parameters:
            out.append(_comment(spec.notes.get("parameters", "")))
        for key, value in spec.parameters.items():
            out.append(f'parameters {{ key: "{key}", value: {{ string_value: "{value}" }} }}\n')
    if spec.warmup:
        out.append("# Run once before READY so the first real request is not the slow one.\n")
        inputs = []
        for t in spec.inputs:
            if t.optional:
                continue
            dtype = TRITON_DTYPES[t.dtype]
            dims = ", ".join(map(str, t.dims("opt")))
            data = f"{spec.warmup_fill}: true"
            if t.dtype == "bytes":
                data = 'input_data_file: "warmup_text"'
            inputs.append(
                f'    inputs {{\n      key: "{t.name}"\n      value: {{ data_type: {dtype}, '
                f"dims: [ {dims} ], {data} }}\n    }}"
            )
        batch = "    batch_size: 1\n" if spec.batched else ""
        out.append(
            'model_warmup [\n  {\n    name: "opt_shape"\n'
            + batch
            + "\n".join(inputs)
            + "\n  }\n]\n"
        )
    else:
        out.append(_comment(spec.notes.get("model_warmup", "")))
    return "".join(out)


def warmup_files(spec: ModelSpec) -> dict[str, bytes]:
    """Files for the model's `warmup/` folder that `render_config`'s warm-up names.

    Triton reads a TYPE_STRING `input_data_file` as elements, each prefixed by its length as a
    4-byte little-endian integer.
    """
    if not spec.warmup or not any(t.dtype == "bytes" and not t.optional for t in spec.inputs):
        return {}
    text = spec.warmup_text.encode()
    return {"warmup_text": struct.pack("<I", len(text)) + text}
