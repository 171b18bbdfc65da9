"""Doppel: self-hosted talking-head replicas, videos and live conversations."""

__version__ = "0.1.0"
