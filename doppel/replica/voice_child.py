"""A replica's voice training in a child process, so it runs beside the face steps.

`doppel.replica.training.train` starts `python -m doppel.replica.voice_child JOB` with the speech
samples and
options in the folder JOB and reads one JSON object a line from the child's stdout:
{"progress": message}, then {"result": voice meta} or {"error": class name, "message": ...,
"reason": ...}. Everything else the child or its tools print goes to stderr.

A process rather than a thread: it has its own torch thread count (one; the face steps keep the
other core), no GIL shared with the face steps' Python loops, and it can be killed when the
replica is cancelled or a face step fails.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

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
    from doppel.voice import enrol, profile

    say("learning the voice")
    stt = enrol.TritonTranscriber(stt_url) if stt_url else None
    learned = profile.train([samples], models_dir, options=options, progress=say, stt=stt)
    learned.save(folder)
    say(f"voice learned from {learned.speech_s:.1f} s of speech (base voice {learned.base_voice})")
    return {
        "folder": folder.name,
        "base_voice": learned.base_voice,
        "speech_s": round(learned.speech_s, 2),
        "base_similarity": learned.base_similarity,
    }


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
