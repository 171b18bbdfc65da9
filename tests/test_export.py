import subprocess
import sys

import pytest

from benchmarks.triton.perf import strip_dynamic_batching
from doppel.settings import REPO_ROOT
from export import registry
from export.spec import ModelSpec, TensorSpec, render_config
from export.tensorrt import GpuUnavailable, require_gpu


@pytest.mark.parametrize("name", sorted(registry.MODULES))
def test_committed_configs_are_what_the_spec_generates(name: str) -> None:
    spec = registry.load(name).spec
    committed = (REPO_ROOT / "model_repository" / name / "config.pbtxt").read_text()
    assert committed == render_config(spec, "cpu"), f"run `python -m export {name}`"


def test_spec_drives_dynamic_axes_and_trt_profiles() -> None:
    spec = ModelSpec(
        name="demo",
        max_batch_size=8,
        inputs=(
            TensorSpec(
                "X",
                "float32",
                (80, "frames"),
                min={"frames": 100},
                opt={"frames": 1000},
                max={"frames": 3000},
            ),
        ),
        outputs=(TensorSpec("Y", "float32", ("steps", 512)),),
    )
    assert spec.onnx_dynamic_axes() == {
        "X": {0: "batch", 2: "frames"},
        "Y": {0: "batch", 1: "steps"},
    }
    assert spec.trt_profile() == {"X": ((1, 80, 100), (4, 80, 1000), (8, 80, 3000))}
    gpu = render_config(spec, "gpu")
    assert 'platform: "tensorrt_plan"' in gpu and "KIND_GPU" in gpu
    cpu = render_config(spec, "cpu")
    assert 'backend: "python"' in cpu and "dims: [ 80, -1 ]" in cpu
    assert "dynamic_batching" not in strip_dynamic_batching(cpu)
    assert "instance_group" in strip_dynamic_batching(cpu)


def test_vad_export_passes_parity(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "export", "vad"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "ONNX Runtime vs TorchScript (silero_vad.jit) output: max abs" in done.stdout
        and " ok" in done.stdout
    )


def test_gpu_target_stops_with_a_message_where_there_is_no_gpu() -> None:
    try:
        require_gpu()
    except GpuUnavailable:
        pass
    else:
        pytest.skip("a GPU is present: the gpu-marked tests cover this path")
    done = subprocess.run(
        [sys.executable, "-m", "export", "vad", "--target", "gpu"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 3
    assert "GPU target unavailable here" in done.stderr


@pytest.mark.gpu
def test_tensorrt_engines_match_pytorch(tmp_path) -> None:
    try:
        require_gpu()
    except GpuUnavailable as exc:
        pytest.skip(f"TensorRT path needs an NVIDIA GPU: {exc}")
    done = subprocess.run(
        [sys.executable, "-m", "export.stt_trt", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("TensorRT fp16 vs PyTorch") == 2
    for name in ("stt_encoder", "stt_decoder"):
        assert (tmp_path / name / "1" / "model.plan").exists()
        assert (tmp_path / name / "1" / "model.json").exists()
