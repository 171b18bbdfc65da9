"""Plumbing every other room stands on: PostgreSQL (`db`, migrations), the job queue (`queue`,
arq on Redis), blob `storage`, pretrained `weights`, URL safety and fetching (`urls`, `fetch`),
row change `feeds`, background `progress` writes, ONNX Runtime `sessions`, the one PyTorch ->
ONNX exporter and its parity check (`onnx_export`), and the local platform's processes (`stack`,
`processes`).

May import: `doppel.settings`, `doppel.errors` and the standard library or third-party packages.
Nothing above it (no audio, face, voice, replica, render, live, domain or cli).
"""
