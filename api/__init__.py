"""Doppel's HTTP API: Litestar + msgspec, Tavus-compatible `/v2/...` routes."""
