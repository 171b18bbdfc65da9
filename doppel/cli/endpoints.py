"""Which Triton a command talks to: `--triton`, else TRITON_GRPC_URL, else the running local
platform's endpoints.json (DOPPEL_RUN_DIR, default `.run`).
"""

from __future__ import annotations

import os
from pathlib import Path

from doppel.settings import REPO_ROOT, _read_endpoints


def find_triton(given: str | None) -> tuple[str | None, str]:
    """The Triton gRPC address to use and where it came from (None when there is none)."""
    if given:
        return given, "--triton"
    if os.environ.get("TRITON_GRPC_URL"):
        return os.environ["TRITON_GRPC_URL"], "TRITON_GRPC_URL"
    path = Path(os.environ.get("DOPPEL_RUN_DIR", REPO_ROOT / ".run")) / "endpoints.json"
    url = _read_endpoints(path).get("triton_grpc")
    return (url, str(path)) if url else (None, "")


def triton_url(given: str | None) -> str:
    """`find_triton`'s address, for the commands that cannot run without one."""
    url, _ = find_triton(given)
    if not url:
        raise SystemExit("no Triton address: start the platform (`make up`) or pass --triton")
    return url
