"""`python -m export <model>... [--target cpu|gpu]`: ONNX export, parity, configs, engines.

cpu: exports (or adapts) the ONNX graph into the models cache, checks ONNX Runtime against
     PyTorch on real inputs, and writes `model_repository/<model>/config.pbtxt`.
gpu: the same, then builds an FP16 TensorRT engine with the spec's profile into `--out`
     (a Triton repository for the GPU), checks it against PyTorch, and writes its config.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from doppel.platform import weights
from doppel.platform.onnx_export import check_parity, onnx_outputs
from doppel.settings import REPO_ROOT, models_dir_from_env
from export import registry
from export.spec import render_config, warmup_files
from export.tensorrt import GpuUnavailable, build_engine, engine_outputs, require_gpu


def export_model(
    name: str,
    models_dir: Path,
    target: str = "cpu",
    out: Path | None = None,
    *,
    check: bool = True,
    force: bool = False,
) -> Path | None:
    item = registry.load(name)
    config_dir = REPO_ROOT / "model_repository" / name
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.pbtxt").write_text(render_config(item.spec, "cpu"))
    for file_name, data in warmup_files(item.spec).items():
        (config_dir / "warmup").mkdir(exist_ok=True)
        (config_dir / "warmup" / file_name).write_bytes(data)
    if not item.onnx:
        return None
    path = weights.onnx_path(models_dir, name)
    if path.exists() and not force and not check and target == "cpu":
        return path
    built = item.build(models_dir)
    if built.module is not None:
        item.spec.export_onnx(built.module, built.sample, path)
        reference = item.spec.torch_outputs(built.module, built.check)
    else:
        assert built.onnx_source is not None and built.reference is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        if built.transform:
            built.transform(built.onnx_source, path)
        else:
            shutil.copyfile(built.onnx_source, path)
        reference = built.reference
    print(f"{name}: ONNX at {path} (opset {item.spec.opset})")
    if check:
        got = onnx_outputs(path, built.check)
        check_parity(
            reference,
            {k: got[k] for k in reference},
            "ONNX Runtime",
            item.atol,
            item.rtol,
            built.reference_name,
        )
    if target == "gpu":
        require_gpu()
        if not item.spec.tensorrt:
            print(f"{name}: stays on the Python backend on the GPU target (see its spec)")
            return path
        out = out or REPO_ROOT / ".run" / "model_repository_gpu"
        plan = build_engine(path, item.spec, out / name / "1" / "model.plan")
        (out / name / "config.pbtxt").write_text(render_config(item.spec, "gpu"))
        got = engine_outputs(plan, built.check)
        check_parity(
            reference,
            {k: got[k] for k in reference},
            "TensorRT fp16",
            max(item.atol, 1e-2),
            max(item.rtol, 1e-2),
            built.reference_name,
        )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("models", nargs="*", help="default: every model")
    parser.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--out", type=Path, help="GPU model repository to write")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="skip models whose ONNX is already in the cache (used by make)",
    )
    args = parser.parse_args(argv)
    models_dir = models_dir_from_env(os.environ)
    names = args.models or sorted(registry.MODULES)
    try:
        for name in names:
            export_model(name, models_dir, args.target, args.out, check=not args.if_missing)
    except GpuUnavailable as exc:
        print(f"GPU target unavailable here: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
