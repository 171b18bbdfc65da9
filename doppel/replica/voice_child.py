"""A replica's voice training in a child process, so it runs beside the face steps.

`learn_in_child` (called by doppel.replica.training) starts `python -m doppel.replica.voice_child
JOB` with the speech samples and options in the folder JOB and reads one JSON object a line from
the child's stdout: {"progress": message}, then {"result": voice meta} or {"error": class
name, "message": ..., "reason": ...}. Everything else the child or its tools print goes to stderr.

A process rather than a thread: it has its own torch thread count (one; the face steps keep the
other core), no GIL shared with the face steps' Python loops, and it can be killed when the
replica is cancelled or a face step fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doppel.settings import REPO_ROOT

REQUEST = "request.pkl"
SAMPLES = "samples.npy"


def write_request(
    job: Path,
    samples: Any,
    folder: Path,
    models_dir: Path,
    options: Any,
    stt_url: str | None = None,
) -> None:
    import numpy as np

    job.mkdir(parents=True, exist_ok=True)
    np.save(job / SAMPLES, np.asarray(samples, np.float32))
    request = {"folder": folder, "models_dir": models_dir, "options": options, "stt_url": stt_url}
    with (job / REQUEST).open("wb") as f:
        pickle.dump(request, f)


def learn(
    samples: Any,
    folder: Path,
    models_dir: Path,
    options: Any,
    say: Any,
    stt_url: str | None = None,
) -> dict[str, Any]:
    """The replica's voice profile from its training speech, saved in `folder`; Whisper is
    Triton's `stt` at `stt_url` (else in this process).
    """
    from doppel.triton import TritonTranscriber
    from doppel.voice import profile

    say("learning the voice")
    stt = TritonTranscriber(stt_url) if stt_url else None
    learned = profile.train([samples], models_dir, options=options, progress=say, stt=stt)
    learned.save(folder)
    say(f"voice learned from {learned.speech_s:.1f} s of speech (base voice {learned.base_voice})")
    return {
        "folder": folder.name,
        "base_voice": learned.base_voice,
        "speech_s": round(learned.speech_s, 2),
        "base_similarity": learned.base_similarity,
    }


async def learn_in_child(
    samples: Any,
    folder: Path,
    job: Path,
    *,
    models_dir: Path | None,
    options: Any,
    stt_url: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The replica's voice profile from the training video's speech (`voice/`), learned in a
    child process (this module's `main`) with its working files in `job`; `say` gets the
    child's progress lines. In a thread, its torch.manual_seed and draws would interleave with
    the face steps' on torch's process-wide generator, its torch threads would add to theirs,
    and it could not be stopped before it ends by itself.
    """
    from doppel import errors
    from doppel.settings import models_dir_from_env

    models_dir = models_dir or models_dir_from_env(os.environ)
    await asyncio.to_thread(write_request, job, samples, folder, models_dir, options, stt_url)
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
    log_path = job / "voice.log"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "doppel.replica.voice_child",
            str(job),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
        )
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "progress" in message:
                    say(message["progress"])
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    error = message
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
    if error is not None:
        kind = getattr(errors, str(error["error"]), None)
        if isinstance(kind, type) and issubclass(kind, errors.InvalidVoiceSample):
            raise kind(error["message"], error.get("reason") or "no_speech")
        if isinstance(kind, type) and issubclass(kind, errors.DoppelError):
            raise kind(error["message"])
        raise RuntimeError(f"voice training failed: {error['error']}: {error['message']}")
    if result is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"voice training exited with code {code} and no result:\n{tail}")
    return result


def main(argv: list[str]) -> int:
    job = Path(argv[0])
    # Messages on a private copy of stdout; fd 1 itself (tools, libraries) goes to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(**message: Any) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        import numpy as np
        import torch

        torch.set_num_threads(1)
        with (job / REQUEST).open("rb") as f:
            request = pickle.load(f)  # noqa: S301 (written by our own parent process)
        samples = np.load(job / SAMPLES)
        meta = learn(
            samples,
            request["folder"],
            request["models_dir"],
            request["options"],
            lambda text: send(progress=str(text)),
            request.get("stt_url"),
        )
    except Exception as exc:  # reported to the parent, which raises it there
        traceback.print_exc()
        send(
            error=type(exc).__name__,
            message=getattr(exc, "message", str(exc)),
            reason=getattr(exc, "reason", None),
        )
        return 1
    send(result=meta)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
