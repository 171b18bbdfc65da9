"""The house's rules (shared/docs/architecture.md) hold, and breaking one fails.

The rules are import-linter contracts in pyproject.toml (`[tool.importlinter]`): floors, the
engine knows no tables, records know no engine, doppel stands below export/api/orchestrator, the
API and the worker apart, thin Triton adapters. `lint-imports` checks them here and in
`make lint`; these tests also prove the check can fail, on a copy of the package with a rule
broken on purpose.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from doppel.settings import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def contracts() -> list[dict[str, object]]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["importlinter"]["contracts"])


def test_every_contract_is_kept() -> None:
    run = lint_imports(REPO_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in run.stdout


def _doppel_imports(path: Path) -> set[str]:
    """The doppel modules a file imports (`from doppel.x import y` counts doppel.x.y when y is a
    module of its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "doppel"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "doppel":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (REPO_ROOT / (sub.replace(".", "/") + ".py")).exists()
                found.add(sub if is_module else str(node.module))
    return found


def test_triton_adapters_call_only_logic_the_contract_covers() -> None:
    """Each doppel module a Triton `model.py` imports is a source of the thin-adapter contract,
    so a new adapter cannot reach around the rule."""
    (thin,) = [c for c in contracts() if str(c["name"]).startswith("Triton adapters stay thin")]
    covered = set(thin["source_modules"])  # type: ignore[call-overload]
    adapters = sorted(REPO_ROOT.glob("model_repository/*/1/model.py")) + sorted(
        REPO_ROOT.glob("export/gpu_models/*/model.py")
    )
    assert len(adapters) >= 8
    uncovered = {
        str(p.relative_to(REPO_ROOT)): sorted(_doppel_imports(p) - covered) for p in adapters
    }
    assert not {k: v for k, v in uncovered.items() if v}, uncovered


@pytest.mark.parametrize(
    ("module", "line", "contract", "chain"),
    [
        (
            "doppel/audio/media.py",
            "from doppel.domain import tenants",
            "The engine knows no tables",
            "doppel.audio.media -> doppel.domain.tenants",
        ),
        (
            "doppel/face/tracking.py",
            "from doppel.render import video",
            "Floors: each room of doppel imports only the rooms below it",
            "doppel.face.tracking -> doppel.render.video",
        ),
        (
            "doppel/domain/tenants.py",
            "from doppel.audio import media",
            "Records know no engine",
            "doppel.domain.tenants -> doppel.audio.media",
        ),
    ],
)
def test_a_broken_rule_fails(
    tmp_path: Path, module: str, line: str, contract: str, chain: str
) -> None:
    """A copy of the code with one forbidden import added: lint-imports fails and names the
    contract and the import."""
    for name in ("doppel", "api", "orchestrator", "export"):
        shutil.copytree(
            REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    broken = tmp_path / module
    broken.write_text(broken.read_text() + f"\n{line}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    report = run.stdout.split("Broken contracts", 1)[-1]
    assert contract in report
    assert chain in report
