"""Benchmarks run the project's real code on real data (`make bench`), one thread per core."""

import os

import pytest

from doppel.settings import default_cache_dir

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def models_dir():
    from pathlib import Path

    return Path(os.environ.get("DOPPEL_MODELS_DIR", default_cache_dir(os.environ) / "models"))
