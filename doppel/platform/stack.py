"""The whole platform on one machine: PostgreSQL, Redis, Triton, the platform's own chat model
(llama.cpp's OpenAI-compatible server), the API and an arq worker.

`make up` and the test session both use this module, so the processes the tests run against are
started exactly as a developer's are. Everything lives under one run folder: data, logs, and a
pid file per process (pid plus the kernel's start time, so `down` never signals a process that
merely reused a pid). This module decides which services run, on which ports, in which order and
when each is ready; the process plumbing under it (pid files, signals, probes) is `processes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from doppel.platform import processes, weights
from doppel.platform.queue import HEARTBEAT_KEY
from doppel.settings import REPO_ROOT, models_dir_from_env

log = logging.getLogger(__name__)

#: Ports tried first by `make up`; a taken one is replaced by a free port the kernel picks.
DEFAULT_PORTS = {
    "api": 8000,
    "postgres": 55432,
    "redis": 56379,
    "triton_http": 58000,
    "triton_grpc": 58001,
    "triton_metrics": 58002,
    "llm": 58080,
}
#: Seconds a process gets to become healthy. Triton loads and warms every model first.
START_TIMEOUT_S = {
    "postgres": 60,
    "redis": 20,
    "triton": 300,
    "llm": 120,
    "api": 60,
    "worker": 60,
}
#: The platform's own chat model (doppel.platform.weights) and the virtualenv its server runs in:
#: scripts/bootstrap.sh makes it from requirements-llm.lock, apart from the main one, because
#: llama-cpp-python's server pins a web stack of its own.
LLM_MODEL = "qwen2.5-coder-0.5b"
LLM_VENV = REPO_ROOT / ".llm-venv"
#: Context window and threads of the llama.cpp server (DOPPEL_LLM_CTX, DOPPEL_LLM_THREADS).
LLM_CTX = 4096
LLM_THREADS = 2


class LocalPlatform:
    """Starts, checks and stops the platform's processes below `run_dir`."""

    def __init__(
        self,
        run_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        model_repository: Path = REPO_ROOT / "model_repository",
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.env = dict(os.environ if env is None else env)
        self.python = python
        self.model_repository = model_repository
        self.models_dir = models_dir_from_env(self.env)
        self.pid_dir = self.run_dir / "pids"
        self.log_dir = self.run_dir / "logs"
        # Children started by this object, kept so they are reaped when stopped.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ---- bookkeeping --------------------------------------------------------------------------
    @property
    def endpoints_path(self) -> Path:
        return self.run_dir / "endpoints.json"

    def read_endpoints(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.endpoints_path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _write_endpoints(self, endpoints: Mapping[str, str]) -> None:
        self.endpoints_path.write_text(json.dumps(dict(endpoints), indent=2) + "\n")

    def managed(self, name: str) -> processes.ManagedProcess | None:
        try:
            record = json.loads((self.pid_dir / f"{name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return processes.ManagedProcess(**record)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
    ) -> processes.ManagedProcess:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if user:
            argv = processes.as_user(user) + argv
        with (self.log_dir / f"{name}.log").open("ab") as logfile:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=dict(env or self.env),
                cwd=REPO_ROOT,
                # Own session and process group: `down` signals the group (Triton's backend stubs
                # included), and a Ctrl-C in the launching shell does not reach it.
                start_new_session=True,
            )
        self._children[name] = proc
        start_time = processes.proc_start_time(proc.pid) or ""
        record = processes.ManagedProcess(name, proc.pid, start_time, int(stop_signal))
        (self.pid_dir / f"{name}.json").write_text(json.dumps(dataclasses.asdict(record)))
        return record

    def _wait_healthy(self, name: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S[name]
        record = self.managed(name)
        while time.monotonic() < deadline:
            if check():
                return
            if record is not None and not record.alive():
                break
            time.sleep(0.25)
        log_path = self.log_dir / f"{name}.log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise processes.PlatformError(f"{name} did not become healthy; see {log_path}:\n{tail}")

    def _running(self, name: str) -> bool:
        record = self.managed(name)
        return record is not None and record.alive()

    def _port(self, key: str, fixed: bool) -> int:
        wanted = int(self.env.get(f"DOPPEL_{key.upper()}_PORT", DEFAULT_PORTS[key]))
        if fixed and processes.port_free(wanted):
            return wanted
        return processes.free_port()

    # ---- services -----------------------------------------------------------------------------
    def start_postgres(self, *, fixed_ports: bool = True) -> str:
        if self._running("postgres"):
            return self.read_endpoints()["database_url"]
        data = self.run_dir / "postgres"
        user = "postgres" if os.geteuid() == 0 else None
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if user:
                shutil.chown(data, user, user)
            data.chmod(0o700)
            pwfile_args = ["-U", "doppel", "--auth=trust", "-E", "UTF8", "--no-instructions"]
            subprocess.run(
                (processes.as_user(user) if user else [])
                + [str(processes.PG_BIN / "initdb"), "-D", str(data), *pwfile_args],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        port = self._port("postgres", fixed_ports)
        self._spawn(
            "postgres",
            [
                str(processes.PG_BIN / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                # TCP only: no socket file to place or clean up.
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off" if self.env.get("DOPPEL_EPHEMERAL") else "fsync=on",
            ],
            stop_signal=signal.SIGINT,
            user=user,
        )
        self._wait_healthy("postgres", lambda: processes.pg_ready(port))
        url = f"postgresql://doppel@127.0.0.1:{port}/doppel"
        processes.ensure_database(f"postgresql://doppel@127.0.0.1:{port}/postgres", "doppel")
        return url

    def start_redis(self, *, fixed_ports: bool = True) -> str:
        if self._running("redis"):
            return self.read_endpoints()["redis_url"]
        port = self._port("redis", fixed_ports)
        folder = self.run_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--save",
                "60 1",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
        )
        self._wait_healthy("redis", lambda: processes.redis_ping(port))
        return f"redis://127.0.0.1:{port}/0"

    def triton_env(self) -> dict[str, str]:
        """Environment for tritonserver and its Python-backend stubs."""
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        site = sysconfig.get_paths()["purelib"]
        env = dict(self.env)
        # The stub must load this interpreter's libpython, not Debian's older one (models.md).
        # The stub's own CUDA runtime shim sits in the wheel's .libs folder; its RPATH is relative
        # to the wheel layout, which the copied stub leaves behind.
        import pytriton

        wheel_libs = str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = ":".join(
            filter(None, [libdir, wheel_libs, env.get("LD_LIBRARY_PATH")])
        )
        # The stub runs an isolated interpreter that ignores PYTHONPATH; every model.py puts
        # DOPPEL_PYTHONPATH first on sys.path instead (the repo, then this virtualenv).
        env["DOPPEL_PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), site])
        env["DOPPEL_MODELS_DIR"] = str(self.models_dir)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start_triton(self, *, fixed_ports: bool = True) -> dict[str, str]:
        if self._running("triton"):
            ep = self.read_endpoints()
            return {k: ep[k] for k in ("triton_http", "triton_grpc", "triton_metrics")}
        server, backends = processes.prepare_triton_backends(self.run_dir / "triton")
        ports = {
            k: self._port(k, fixed_ports) for k in ("triton_http", "triton_grpc", "triton_metrics")
        }
        self._spawn(
            "triton",
            [
                str(server),
                f"--model-repository={self.model_repository}",
                f"--backend-directory={backends}",
                f"--http-port={ports['triton_http']}",
                f"--grpc-port={ports['triton_grpc']}",
                f"--metrics-port={ports['triton_metrics']}",
                "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1",
                # Explicit control: replicas' generators are loaded and unloaded at run time.
                "--model-control-mode=explicit",
                "--load-model=*",
                "--exit-on-error=false",
                "--log-verbose=0",
            ],
            env=self.triton_env(),
        )
        http = f"http://127.0.0.1:{ports['triton_http']}"
        self._wait_healthy("triton", lambda: processes.triton_ready(http))
        return {
            "triton_http": http,
            "triton_grpc": f"127.0.0.1:{ports['triton_grpc']}",
            "triton_metrics": f"http://127.0.0.1:{ports['triton_metrics']}/metrics",
        }

    def start_llm(self, *, fixed_ports: bool = True) -> dict[str, str]:
        """llama.cpp's OpenAI-compatible server with the platform's own model; returns the
        `llm` (base URL, up to /v1) and `llm_model` endpoints.
        """
        if self._running("llm"):
            ep = self.read_endpoints()
            return {"llm": ep["llm"], "llm_model": ep["llm_model"]}
        python = LLM_VENV / "bin" / "python"
        if not python.exists():
            raise processes.PlatformError(
                f"{python} is missing: scripts/bootstrap.sh (run by `make up` and `make test`) "
                "builds the LLM server's virtualenv"
            )
        model = weights.model_dir(self.models_dir, LLM_MODEL) / "model.gguf"
        port = self._port("llm", fixed_ports)
        self._spawn(
            "llm",
            [
                str(python),
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                LLM_MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                self.env.get("DOPPEL_LLM_CTX", str(LLM_CTX)),
                "--n_threads",
                self.env.get("DOPPEL_LLM_THREADS", str(LLM_THREADS)),
            ],
        )
        url = f"http://127.0.0.1:{port}/v1"
        self._wait_healthy("llm", lambda: processes.http_ok(f"{url}/models"))
        return {"llm": url, "llm_model": LLM_MODEL}

    def app_env(self, endpoints: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.env)
        env.update(
            DATABASE_URL=endpoints["database_url"],
            REDIS_URL=endpoints["redis_url"],
            TRITON_GRPC_URL=endpoints["triton_grpc"],
            TRITON_HTTP_URL=endpoints.get("triton_http", ""),
            DOPPEL_LLM_URL=endpoints.get("llm", ""),
            DOPPEL_LLM_MODEL=endpoints.get("llm_model", ""),
            DOPPEL_RUN_DIR=str(self.run_dir),
            DOPPEL_MODELS_DIR=str(self.models_dir),
            PYTHONPATH=":".join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_api(self, endpoints: Mapping[str, str], *, fixed_ports: bool = True) -> str:
        if self._running("api"):
            return self.read_endpoints()["api"]
        port = self._port("api", fixed_ports)
        self._spawn(
            "api",
            [self.python, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=self.app_env(endpoints),
        )
        url = f"http://127.0.0.1:{port}"
        self._wait_healthy("api", lambda: processes.http_ok(f"{url}/health/live"))
        return url

    def start_worker(self, endpoints: Mapping[str, str]) -> None:
        if self._running("worker"):
            return
        self._spawn("worker", [self.python, "-m", "orchestrator"], env=self.app_env(endpoints))
        redis_port = int(endpoints["redis_url"].rsplit(":", 1)[1].split("/")[0])
        self._wait_healthy("worker", lambda: processes.redis_exists(redis_port, HEARTBEAT_KEY))

    def up(self, *, fixed_ports: bool = True, with_app: bool = True) -> dict[str, str]:
        """Start whatever is not running (or given by environment) and write endpoints.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        endpoints = self.read_endpoints()
        external = {
            "database_url": self.env.get("DATABASE_URL"),
            "redis_url": self.env.get("REDIS_URL"),
            "triton_grpc": self.env.get("TRITON_GRPC_URL"),
        }
        endpoints["database_url"] = external["database_url"] or self.start_postgres(
            fixed_ports=fixed_ports
        )
        self._write_endpoints(endpoints)
        endpoints["redis_url"] = external["redis_url"] or self.start_redis(fixed_ports=fixed_ports)
        self._write_endpoints(endpoints)
        if external["triton_grpc"]:
            endpoints["triton_grpc"] = external["triton_grpc"]
            endpoints["triton_http"] = self.env.get("TRITON_HTTP_URL", "")
            endpoints["triton_metrics"] = self.env.get("TRITON_METRICS_URL", "")
        else:
            endpoints.update(self.start_triton(fixed_ports=fixed_ports))
        self._write_endpoints(endpoints)
        if self.env.get("DOPPEL_LLM_URL"):
            endpoints["llm"] = self.env["DOPPEL_LLM_URL"]
            endpoints["llm_model"] = self.env.get("DOPPEL_LLM_MODEL", "")
        else:
            endpoints.update(self.start_llm(fixed_ports=fixed_ports))
        self._write_endpoints(endpoints)
        if with_app:
            endpoints["api"] = self.start_api(endpoints, fixed_ports=fixed_ports)
            # The API serves the web app's static build on the same origin (api/app.py).
            endpoints["web"] = endpoints["api"] + "/"
            self._write_endpoints(endpoints)
            self.start_worker(endpoints)
        return endpoints

    def down(self) -> list[str]:
        """Stop every process this run folder records, apps first; returns the names stopped."""
        stopped = []
        for name in ("worker", "api", "llm", "triton", "redis", "postgres"):
            record = self.managed(name)
            if record is None:
                continue
            if record.alive():
                processes.terminate(record)
                stopped.append(name)
            child = self._children.pop(name, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
            (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
        return stopped
