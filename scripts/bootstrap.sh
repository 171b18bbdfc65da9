#!/usr/bin/env bash
# Installs whatever Doppel needs and is missing, then exits. Idempotent; a rerun with everything
# in place takes a few seconds.
#   1. Debian packages (PostgreSQL, Redis, ffmpeg, espeak-ng, libb64 for perf_analyzer).
#   2. A virtualenv with requirements.lock, kept in the cache and keyed by the lock's hash, so
#      fresh clones share it; .venv links to it. Likewise .llm-venv from requirements-llm.lock:
#      llama-cpp-python's OpenAI-compatible server (the platform's own chat model), built from
#      source once (about 4 minutes; pip's wheel cache keeps the build).
#   3. Model weights from models.md, assembled and sha256-checked in the cache, and the ONNX
#      graphs exported from them (python -m export).
#   4. The web app: `npm ci` in web/ when package-lock.json changed, `npm run build` (the static
#      export web/out that the API serves) when its sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${DOPPEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/doppel}
mkdir -p "$CACHE"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

# --- 1. Debian packages -------------------------------------------------------------------
# chromium: the web app's browser tests (playwright-core drives it; no browser download).
# cmake, g++: llama-cpp-python builds from source (PyPI has no wheel).
DEB_PACKAGES=(postgresql redis-server ffmpeg espeak-ng libb64-0d python3-venv util-linux procps festival festvox-us-slt-hts chromium cmake g++)
# Node.js for the web app (Debian 12's is 18.19; Next.js 15 needs 18.18 or newer): only when
# there is no node at all, so a newer one already installed is kept.
command -v node >/dev/null 2>&1 || DEB_PACKAGES+=(nodejs npm)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. virtualenv ------------------------------------------------------------------------
PYTHON=${DOPPEL_PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "Doppel needs Python 3.11 (found $("$PYTHON" --version)); set DOPPEL_PYTHON" >&2; exit 1; }
lock_hash=$( (cat requirements.lock; "$PYTHON" --version) | sha256sum | cut -c1-16)
VENV="$CACHE/venv-$lock_hash"
if [ ! -f "$VENV/.complete" ]; then
  say "creating virtualenv $VENV (first run: several minutes; pip's cache makes reruns fast)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import litestar, asyncpg, arq, tritonclient.grpc.aio, faster_whisper, pytriton" \
    || { echo "virtualenv install failed" >&2; exit 1; }
  touch "$VENV/.complete"
fi
if [ "$(readlink .venv 2>/dev/null)" != "$VENV" ]; then
  rm -rf .venv
  ln -s "$VENV" .venv
fi

# The LLM server's own virtualenv: its web stack (FastAPI, pydantic) is pinned apart from ours.
llm_hash=$( (cat requirements-llm.lock; "$PYTHON" --version) | sha256sum | cut -c1-16)
LLM_VENV="$CACHE/llm-venv-$llm_hash"
if [ ! -f "$LLM_VENV/.complete" ]; then
  say "creating the LLM server's virtualenv $LLM_VENV (first run: builds llama.cpp, a few minutes)"
  rm -rf "$LLM_VENV"
  "$PYTHON" -m venv "$LLM_VENV"
  # Portable build (no -march=native): the cached wheel may run on another CPU.
  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$LLM_VENV/bin/pip" install -q --disable-pip-version-check -r requirements-llm.lock 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$LLM_VENV/bin/python" -c "import llama_cpp.server.app" \
    || { echo "LLM server virtualenv install failed" >&2; exit 1; }
  touch "$LLM_VENV/.complete"
fi
if [ "$(readlink .llm-venv 2>/dev/null)" != "$LLM_VENV" ]; then
  rm -rf .llm-venv
  ln -s "$LLM_VENV" .llm-venv
fi

# --- 3. model weights and exported graphs --------------------------------------------------
PYTHONPATH="$ROOT" .venv/bin/python -m doppel weights fetch
# ONNX graphs for the Triton models, exported once into the cache (python -m export re-exports
# and re-checks parity on demand).
PYTHONPATH="$ROOT" .venv/bin/python -m export --if-missing

# --- 4. web app ---------------------------------------------------------------------------
# Stamps keyed by content: a rerun with nothing changed does neither step. npm keeps its
# default cache (~/.npm), so a reinstall after a lock change is mostly offline.
lock_stamp=$(sha256sum web/package-lock.json | cut -c1-16)
if [ "$(cat web/node_modules/.stamp-lock 2>/dev/null)" != "$lock_stamp" ]; then
  say "installing the web app's npm packages (web/package-lock.json)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_stamp" > web/node_modules/.stamp-lock
fi
src_stamp=$(cd web && find src scripts next.config.mjs tsconfig.json package-lock.json -type f -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ ! -f web/out/index.html ] || [ "$(cat web/.stamp-build 2>/dev/null)" != "$src_stamp" ]; then
  say "building the web app (web/out)"
  (cd web && NEXT_TELEMETRY_DISABLED=1 npm run build --silent >/dev/null)
  echo "$src_stamp" > web/.stamp-build
fi
say "ready"
