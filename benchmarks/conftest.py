"""Benchmarks run the project's real code on real data (`make bench`), one thread per core."""

import os

import pytest

from doppel.settings import models_dir_from_env

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def models_dir():

    return models_dir_from_env(os.environ)
