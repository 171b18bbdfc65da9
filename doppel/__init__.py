"""Doppel: self-hosted talking-head replicas, videos and live conversations."""

import os

# Torch's OpenMP threads sleep while they wait instead of spinning (unless the environment says
# otherwise; read when torch loads, so it is set before anything imports it). On a machine whose
# cores are shared (the worker trains a replica's voice beside its renderer; other jobs), a
# spinning thread whose partner was descheduled made two-thread renderer training 4x slower than
# one thread (2.6 against 0.6 s a step); sleeping costs ~15% on an idle machine (0.40 against
# 0.35 s a step on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
