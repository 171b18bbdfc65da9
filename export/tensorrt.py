"""ONNX -> TensorRT FP16 engine with the spec's optimisation profile (GPU target only).

Importable everywhere; `build_engine` raises `GpuUnavailable` where there is no NVIDIA GPU or no
`tensorrt` package, before doing any work that needs one.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from export.spec import ModelSpec


class GpuUnavailable(RuntimeError):
    """The TensorRT path needs an NVIDIA GPU and the `tensorrt` package."""


def require_gpu() -> object:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise GpuUnavailable("the `tensorrt` package is not installed (GPU target only)") from exc
    try:
        import torch

        if not torch.cuda.is_available():
            raise GpuUnavailable("no CUDA device is visible")
    except ImportError:
        pass
    return trt


def build_engine(onnx_path: Path, spec: ModelSpec, plan_path: Path, *, fp16: bool = True) -> Path:
    """Build `plan_path` from `onnx_path`; writes `<plan>.json` with versions and shapes."""
    trt = require_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = spec.trt_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {spec.name}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    meta = {
        "model": spec.name,
        "tensorrt": trt.__version__,
        "fp16": fp16,
        "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
        "onnx": onnx_path.name,
        "opset": spec.opset,
        "host": platform.node(),
        "built_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    try:
        import torch

        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["cuda"] = torch.version.cuda
    except Exception:  # metadata only
        pass
    plan_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return plan_path


def engine_outputs(plan_path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a built engine once (for the parity check against PyTorch)."""
    trt = require_gpu()
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    context = engine.create_execution_context()
    buffers: dict[str, torch.Tensor] = {}
    for name, array in inputs.items():
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_input_shape(name, tuple(array.shape))
    outputs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            dtype = torch.from_numpy(
                np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            ).dtype
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            outputs.append(name)
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.Stream()
    context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: buffers[name].float().cpu().numpy() for name in outputs}
