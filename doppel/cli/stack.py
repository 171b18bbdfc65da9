"""`up`, `down`, `status` (the local platform of one run folder, as `make up` runs it) and
`weights fetch` (the model weights that platform loads).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from doppel.platform import weights
from doppel.settings import models_dir_from_env


def up(run_dir: Path) -> int:
    from doppel.platform.processes import PlatformError
    from doppel.platform.stack import LocalPlatform

    platform = LocalPlatform(run_dir)
    try:
        endpoints = platform.up()
    except PlatformError as exc:
        print(f"make up failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(endpoints, indent=2))
    print(f"endpoints written to {platform.endpoints_path}")
    return 0


def down(run_dir: Path) -> int:
    from doppel.platform.stack import LocalPlatform

    stopped = LocalPlatform(run_dir).down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status(run_dir: Path) -> int:
    from doppel.platform.stack import LocalPlatform

    platform = LocalPlatform(run_dir)
    for name in ("postgres", "redis", "triton", "llm", "api", "worker"):
        record = platform.managed(name)
        state = "running" if record and record.alive() else "stopped"
        print(f"{name:9} {state}" + (f" (pid {record.pid})" if record else ""))
    return 0


def fetch_weights(names: list[str]) -> int:
    models_dir = models_dir_from_env(os.environ)
    for name in names:
        print(f"{name}: {weights.fetch(models_dir, name)}")
    return 0
