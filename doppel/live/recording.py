"""A call's recording (`properties.enable_recording`): the replica's video as it was streamed and
the call's mixed audio (the replica's voice and the person's microphone), as one MP4 marked
AI-generated like every Doppel video.

The media clock hands each slot (a frame and its 40 ms of the replica's audio) to `slot` as it
is made; the person's microphone reaches `heard` as it arrives. Each slot takes the person's
audio that arrived by then (40 ms of it, silence when none), so both voices sit on the one
timeline the call was played on. A writer thread does the work off the call's event loop: the
frames go to an x264 encoder (`ultrafast`: the call's render shares the cores), the two voices
to two WAV files; `finish` closes them and muxes the MP4 (the video copied, the voices mixed to
AAC). Nothing is kept in memory beyond a few seconds of slots, so a long call costs disk, not
RAM. A recording that fails leaves no file and never stops the call.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile

from doppel.errors import InvalidMedia
from doppel.face import composite
from doppel.live.clock import AUDIO_RATE, SLOT_RATE, Slot

log = logging.getLogger(__name__)

#: The microphone's rate as the session hears it (doppel.audio.vad.RATE).
MIC_RATE = 16000
MIC_SLOT = MIC_RATE // SLOT_RATE  # 640 samples a slot
#: The person's audio waiting for slots: more than this (a stalled clock) drops the oldest.
MIC_BACKLOG = MIC_RATE // 2
#: Slots waiting for the writer thread (2 s): past this, new ones are dropped and counted.
MAX_PENDING = 2 * SLOT_RATE


class Recorder:
    """Records one call into `folder` (a temporary folder it owns). Call `slot` and `heard`
    from the event loop; `finish` (blocking: run it in a thread) returns the MP4's path and
    its duration, or None when nothing was recorded.
    """

    def __init__(self, folder: Path, size: tuple[int, int]) -> None:
        self.folder = folder
        self.size = size
        self.slots = 0
        self.dropped = 0
        self._mic = np.zeros(0, np.float32)
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = queue.Queue()
        self._failed: BaseException | None = None
        self._closed = False
        width, height = size
        self._video = folder / "video.mp4"
        self._voice = soundfile.SoundFile(
            folder / "replica.wav", "w", AUDIO_RATE, 1, subtype="PCM_16"
        )
        self._person = soundfile.SoundFile(folder / "person.wav", "w", MIC_RATE, 1, subtype="FLOAT")
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
        args += ["-r", str(SLOT_RATE), "-i", "pipe:0", "-c:v", "libx264", "-preset", "ultrafast"]
        args += ["-crf", "23", "-pix_fmt", "yuv420p", str(self._video)]
        self._encoder = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._thread = threading.Thread(target=self._write, name="call-recording", daemon=True)
        self._thread.start()

    @classmethod
    def create(cls, size: tuple[int, int]) -> Recorder:
        return cls(Path(tempfile.mkdtemp(prefix="doppel-call-")), size)

    def heard(self, samples: np.ndarray) -> None:
        """The person's microphone, 16 kHz float mono, as it arrives."""
        if self._closed:
            return
        self._mic = np.concatenate([self._mic, samples.astype(np.float32, copy=False)])
        if len(self._mic) > MIC_BACKLOG:
            self._mic = self._mic[-MIC_BACKLOG:]

    def slot(self, slot: Slot) -> None:
        """A slot the clock made (a MediaClock observer): its frame, the replica's audio and
        the person's 40 ms beside it.
        """
        if self._closed or self._failed is not None:
            return
        if self._queue.qsize() > MAX_PENDING:
            self.dropped += 1
            return
        mic = np.zeros(MIC_SLOT, np.float32)
        n = min(MIC_SLOT, len(self._mic))
        mic[:n], self._mic = self._mic[:n], self._mic[n:]
        self._queue.put((slot.frame, slot.audio, mic))
        self.slots += 1

    def _write(self) -> None:
        assert self._encoder.stdin is not None
        while (item := self._queue.get()) is not None:
            if self._failed is not None:
                continue
            frame, voice, mic = item
            try:
                self._encoder.stdin.write(np.ascontiguousarray(frame).tobytes())
                self._voice.write(voice)
                self._person.write(mic)
            except BaseException as exc:  # a full disk, a dead encoder: the call goes on
                self._failed = exc
                log.warning("the call's recording stopped: %s", exc)

    def finish(self, out: Path) -> float | None:
        """Close the streams and write the MP4 to `out`; its duration in seconds, or None
        when nothing was recorded. Raises InvalidMedia when the recording failed.
        """
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._voice.close()
        self._person.close()
        assert self._encoder.stdin is not None and self._encoder.stderr is not None
        with contextlib.suppress(OSError):  # an encoder that died: reported below
            self._encoder.stdin.close()
        err = self._encoder.stderr.read().decode(errors="replace")
        self._encoder.stderr.close()
        code = self._encoder.wait()
        try:
            if self._failed is not None:
                raise InvalidMedia(f"The call's recording failed: {self._failed}")
            if self.slots == 0:
                return None
            if code != 0:
                raise InvalidMedia(f"The call's video could not be encoded ({err.strip()[-300:]}).")
            tmp = out.with_name(f".{out.stem}.partial.mp4")
            args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
            args += ["-i", str(self._video), "-i", str(self.folder / "replica.wav")]
            args += ["-i", str(self.folder / "person.wav"), "-filter_complex"]
            args += ["[1:a][2:a]amix=inputs=2:duration=first:normalize=0[a]"]
            args += ["-map", "0:v:0", "-map", "[a]", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k"]
            args += ["-ar", str(AUDIO_RATE), *composite.metadata_args(), str(tmp)]
            done = subprocess.run(args, capture_output=True, timeout=600, check=False)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                said = done.stderr.decode(errors="replace").strip()[-300:]
                raise InvalidMedia(f"The call's recording could not be written ({said}).")
            shutil.move(tmp, out)
            return self.slots / SLOT_RATE
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def abort(self) -> None:
        """Drop the recording (the conversation was deleted)."""
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._voice.close()
        self._person.close()
        self._encoder.kill()
        self._encoder.wait()
        for pipe in (self._encoder.stdin, self._encoder.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a killed encoder's stdin: nothing to flush
                    pipe.close()
        shutil.rmtree(self.folder, ignore_errors=True)
