"""Runtime settings: built once per entry point from the environment, then passed down.

Nothing in Doppel reads the environment at import time; `Settings.from_env()` is called by the
entry points (API, worker, CLI, test session) and the result travels as a value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: ONNX Runtime's execution providers, in order of preference: a comma list (doppel.platform.
#: sessions opens every in-process session with them).
ONNX_PROVIDERS_ENV = "DOPPEL_ONNX_PROVIDERS"
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Where heavy downloads live (virtualenvs, model weights): outside the checkout, so a fresh
    clone reuses them.
    """
    if env.get("DOPPEL_CACHE"):
        return Path(env["DOPPEL_CACHE"])
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "/root")) / ".cache")
    return Path(xdg) / "doppel"


def models_dir_from_env(env: Mapping[str, str]) -> Path:
    """The models cache: `DOPPEL_MODELS_DIR`, else `<cache>/models`."""
    if env.get("DOPPEL_MODELS_DIR"):
        return Path(env["DOPPEL_MODELS_DIR"])
    return default_cache_dir(env) / "models"


def onnx_providers_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """`DOPPEL_ONNX_PROVIDERS` as a tuple (blank items ignored); unset or empty: CPU only.
    Read here for `Settings` and by Triton's Python models, which build no `Settings`
    (doppel.platform.sessions says why).
    """
    names = tuple(p.strip() for p in env.get(ONNX_PROVIDERS_ENV, "").split(",") if p.strip())
    return names or CPU_PROVIDERS


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a Doppel process needs to know about its surroundings."""

    database_url: str
    redis_url: str
    triton_grpc_url: str
    triton_http_url: str
    #: Uploaded media and job outputs; one folder per tenant below it.
    data_dir: Path
    #: Model weights assembled by `python -m doppel weights fetch`.
    models_dir: Path
    #: Largest upload the API accepts, in bytes (a 2-minute 1080p training video fits).
    max_upload_bytes: int = 512 * 1024 * 1024
    #: Seconds the API waits for one Triton inference before answering 503.
    triton_timeout_s: float = 120.0
    #: Replica training overrides (None: the engines' defaults). Tests and quick trials set
    #: DOPPEL_RENDERER_STEPS, DOPPEL_MOUTH_STEPS, DOPPEL_VOICE_EPOCHS to train small.
    renderer_steps: int | None = None
    mouth_steps: int | None = None
    voice_epochs: int | None = None
    #: URL fetches and webhooks may reach loopback, private and link-local addresses
    #: (DOPPEL_ALLOW_PRIVATE_URLS=1; tests and single-machine setups). Off: doppel.platform.urls
    #: refuses.
    allow_private_urls: bool = False
    #: Seconds one URL input (`train_video_url`, `consent_video_url`, `audio_url`) may take to
    #: download, redirects included (DOPPEL_FETCH_TIMEOUT_S); its size limit is
    #: `max_upload_bytes`, like an upload's.
    fetch_timeout_s: float = 120.0
    #: Base URL of the API as callers reach it, for links in webhook bodies
    #: (DOPPEL_PUBLIC_URL; default: the `api` entry of `.run/endpoints.json`).
    public_url: str = "http://127.0.0.1:8000"
    #: Seconds one webhook POST may take.
    webhook_timeout_s: float = 10.0
    #: Delays before each retry of a failed webhook delivery (first attempt at once; after the
    #: last delay's attempt it is given up).
    webhook_backoff_s: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0, 3600.0)
    #: The web app's static build (`npm run build` in web/), served by the API at `/` when it
    #: holds an index.html (DOPPEL_WEB_DIR; default `<repo>/web/out`). None: no web app.
    web_dir: Path | None = None
    #: The platform's own chat model, for a persona without an LLM layer of its own: an
    #: OpenAI-compatible base URL (DOPPEL_LLM_URL; default: the `llm` server `make up` starts)
    #: and the model's name there (DOPPEL_LLM_MODEL). Empty: no platform model.
    llm_url: str = ""
    llm_model: str = ""
    #: ONNX Runtime execution providers for graphs run in-process (DOPPEL_ONNX_PROVIDERS, a
    #: comma list in order of preference). CPU by default; a GPU deployment sets e.g.
    #: "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider". Triton's Python
    #: models (talking_head, mouth_motion) read the same variable.
    onnx_providers: tuple[str, ...] = CPU_PROVIDERS
    #: STUN/TURN URLs for live calls' WebRTC peers (DOPPEL_ICE_SERVERS, a comma list). Empty:
    #: host candidates only (the same machine or LAN), never a public default.
    ice_servers: tuple[str, ...] = ()
    #: Height of a live call's video (DOPPEL_STREAM_HEIGHT); None: the replica's own size.
    stream_height: int | None = None
    #: Live calls gather ICE candidates on 127.0.0.1 only (DOPPEL_ICE_LOOPBACK=1): tests and a
    #: browser on this machine (Chromium needs --allow-loopback-in-peer-connection), so no packet
    #: leaves the machine. Off: aioice's host addresses, as a deployment needs.
    ice_loopback: bool = False
    #: Live video calls one API process holds at once (DOPPEL_MAX_CALLS); past it a new
    #: conversation is a 503. Default: one per two CPU cores.
    max_calls: int = dataclasses.field(default_factory=lambda: default_max_calls())
    #: Latency levers of live calls, each measured by benchmarks/live: the first piece of a
    #: reply spoken at a clause this long (DOPPEL_FIRST_CLAUSE_CHARS; 0: whole sentences), and
    #: the person's turn transcribed after this much silence, while the end-of-turn silence
    #: runs on (DOPPEL_EARLY_TRANSCRIPT_S; empty or "off": at the turn's end).
    first_clause_chars: int = 24
    #: The platform's own LLM handles tool calls (DOPPEL_LLM_TOOLS=1): the built-in
    #: `get_current_time` is offered to it. Off for the bundled 0.5B model (doppel.live.tools).
    llm_tools: bool = False
    early_transcript_s: float | None = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: the process environment).

        Unset values fall back to what `make up` wrote into `.run/endpoints.json`, so a
        developer's shell needs no exports after `make up`.
        """
        env = dict(os.environ if env is None else env)
        run_dir = Path(env.get("DOPPEL_RUN_DIR", REPO_ROOT / ".run"))
        endpoints = _read_endpoints(run_dir / "endpoints.json")

        def pick(var: str, key: str) -> str:
            value = env.get(var) or endpoints.get(key)
            if not value:
                raise RuntimeError(
                    f"{var} is not set and {run_dir / 'endpoints.json'} has no {key!r}: "
                    "run `make up` first or export it"
                )
            return value

        grpc_url = pick("TRITON_GRPC_URL", "triton_grpc")
        return cls(
            database_url=pick("DATABASE_URL", "database_url"),
            redis_url=pick("REDIS_URL", "redis_url"),
            triton_grpc_url=grpc_url,
            triton_http_url=env.get("TRITON_HTTP_URL") or endpoints.get("triton_http", ""),
            data_dir=Path(env.get("DOPPEL_DATA_DIR", run_dir / "data")),
            models_dir=models_dir_from_env(env),
            max_upload_bytes=int(env.get("DOPPEL_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)),
            triton_timeout_s=float(env.get("DOPPEL_TRITON_TIMEOUT_S", 120.0)),
            renderer_steps=_opt_int(env, "DOPPEL_RENDERER_STEPS"),
            mouth_steps=_opt_int(env, "DOPPEL_MOUTH_STEPS"),
            voice_epochs=_opt_int(env, "DOPPEL_VOICE_EPOCHS"),
            allow_private_urls=env.get("DOPPEL_ALLOW_PRIVATE_URLS", "").strip().lower()
            in ("1", "true", "yes", "on"),
            fetch_timeout_s=float(env.get("DOPPEL_FETCH_TIMEOUT_S", 120.0)),
            public_url=(
                env.get("DOPPEL_PUBLIC_URL") or endpoints.get("api") or "http://127.0.0.1:8000"
            ).rstrip("/"),
            web_dir=Path(env.get("DOPPEL_WEB_DIR") or REPO_ROOT / "web" / "out"),
            llm_url=env.get("DOPPEL_LLM_URL") or endpoints.get("llm", ""),
            llm_model=env.get("DOPPEL_LLM_MODEL") or endpoints.get("llm_model", ""),
            onnx_providers=onnx_providers_from_env(env),
            ice_servers=tuple(
                u.strip() for u in env.get("DOPPEL_ICE_SERVERS", "").split(",") if u.strip()
            ),
            stream_height=_stream_height(env),
            max_calls=_opt_int(env, "DOPPEL_MAX_CALLS") or default_max_calls(),
            first_clause_chars=_opt_int(env, "DOPPEL_FIRST_CLAUSE_CHARS") or 0
            if "DOPPEL_FIRST_CLAUSE_CHARS" in env
            else 24,
            early_transcript_s=_opt_seconds(env, "DOPPEL_EARLY_TRANSCRIPT_S", 0.25),
            llm_tools=env.get("DOPPEL_LLM_TOOLS", "").strip().lower() in ("1", "true", "yes"),
            ice_loopback=env.get("DOPPEL_ICE_LOOPBACK", "").strip().lower()
            in ("1", "true", "yes", "on"),
        )


def _opt_int(env: Mapping[str, str], var: str) -> int | None:
    value = env.get(var, "").strip()
    return int(value) if value else None


def _opt_seconds(env: Mapping[str, str], var: str, default: float) -> float | None:
    """Seconds from `var`; `default` when unset; None when empty or "off"."""
    if var not in env:
        return default
    value = env[var].strip().lower()
    return None if value in ("", "off") else float(value)


def _read_endpoints(path: Path) -> dict[str, str]:
    import json

    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _stream_height(env: Mapping[str, str]) -> int | None:
    """DOPPEL_STREAM_HEIGHT (0: the replica's own size); unset: 360 on a machine of 4 cores
    or fewer (VP8 at 720p costs ~11 ms a frame there, and benchmarks/live measured end of
    speech to first audio p50 6.1 s at 360p against 7.6 s at 720p on 2 cores), else the
    replica's own.
    """
    if "DOPPEL_STREAM_HEIGHT" in env:
        return _opt_int(env, "DOPPEL_STREAM_HEIGHT") or None
    return 360 if (os.cpu_count() or 2) <= 4 else None


def default_max_calls() -> int:
    """Live video calls a machine serves in real time: one per two CPU cores (measured on 2
    cores: one call's render, VP8 encoding, VAD, Whisper and LLM fill them).
    """
    return max(1, (os.cpu_count() or 2) // 2)
