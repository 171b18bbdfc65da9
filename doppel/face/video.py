"""Video files through ffmpeg: probe, normalise to the engine's frame rate, read frames as arrays.

Everything goes through the `ffmpeg`/`ffprobe` programs (pipes, no temporary frame files), so any
container or codec ffmpeg reads is accepted and the Python side only ever sees RGB arrays.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Generator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from doppel.errors import InvalidMedia

#: Frame rate of every video the talking-head engine trains on and renders (Wav2Lip, MuseTalk
#: and GRID all use 25 fps; audio features are computed per 40 ms frame).
ENGINE_FPS = 25
#: Normalised videos are capped at this height: more pixels add decode time to every training
#: epoch and nothing to a 160-256 px face renderer (a 1080p face is already ~300 px tall).
MAX_HEIGHT = 1080
#: x264 quality of the normalised copy: visually lossless, so training sees the real texture.
CRF = 18


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a file (display size: rotation already applied)."""

    path: Path
    duration_s: float
    fps: float
    width: int
    height: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None

    @property
    def frame_count_estimate(self) -> int:
        return round(self.duration_s * self.fps)


def probe(path: Path) -> VideoInfo:
    """Read container and stream facts with ffprobe (milliseconds: no frame is decoded).

    Raises `InvalidMedia` when ffmpeg cannot read the file or it has no video stream.
    """
    args = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    proc = subprocess.run([*args, str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        detail = lines[-1] if lines else f"ffprobe exited with {proc.returncode}"
        raise InvalidMedia(f"The file could not be read as a video ({detail}).")
    doc = json.loads(proc.stdout or "{}")
    streams = doc.get("streams", [])
    # Cover art is a video stream too (a single attached picture): never the video.
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        raise InvalidMedia("The file has no video stream: upload a video of yourself talking.")
    v = videos[0]
    width, height = int(v.get("width", 0)), int(v.get("height", 0))
    if _rotation(v) in (90, 270):
        width, height = height, width
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate")) or 0.0
    duration = _float(doc.get("format", {}).get("duration")) or _float(v.get("duration")) or 0.0
    return VideoInfo(
        path=path,
        duration_s=duration,
        fps=fps,
        width=width,
        height=height,
        has_audio=bool(audios),
        video_codec=str(v.get("codec_name", "")),
        audio_codec=str(audios[0].get("codec_name", "")) if audios else None,
    )


def normalise(
    src: Path, dst: Path, *, fps: int = ENGINE_FPS, max_height: int = MAX_HEIGHT
) -> VideoInfo:
    """Re-encode `src` to an H.264 MP4 at a constant `fps` (audio kept as AAC when present).

    Constant frame rate makes frame index = time x fps exact, which the audio-to-mouth training
    pairs rely on; the size is kept (even dimensions for yuv420p) unless taller than `max_height`.
    """
    scale = f"scale=-2:'min({max_height},ih-mod(ih,2))':flags=bicubic"
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src)]
    args += ["-map", "0:v:0", "-map", "0:a:0?", "-vf", f"fps={fps},{scale},setsar=1"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(CRF), "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(dst)]
    _run(args, f"The video could not be converted to {fps} fps")
    return probe(dst)


def remux(src: Path, dst: Path) -> VideoInfo:
    """Copy `src`'s first video and audio streams into the MP4 `dst` without encoding them
    (index at the front): for a file this module already wrote in the engine's format.
    """
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src)]
    args += ["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-movflags", "+faststart", str(dst)]
    _run(args, "The video could not be copied")
    return probe(dst)


def concatenate(sources: Sequence[Path], dst: Path, *, fps: int = ENGINE_FPS) -> VideoInfo:
    """Join several clips of one person into one training video (size of the first clip).

    Every source needs an audio track: a replica learns from the speech as much as the face.
    """
    if not sources:
        raise ValueError("no clips to join")
    infos = [probe(p) for p in sources]
    for info in infos:
        if not info.has_audio:
            raise InvalidMedia(f"{info.path.name} has no audio track; every clip needs one.")
    w, h = infos[0].width - infos[0].width % 2, infos[0].height - infos[0].height % 2
    parts = []
    for i in range(len(sources)):
        parts.append(
            f"[{i}:v:0]fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1[v{i}];"
            f"[{i}:a:0]aformat=sample_rates=48000:channel_layouts=stereo[a{i}];"
        )
    joined = "".join(f"[v{i}][a{i}]" for i in range(len(sources)))
    graph = "".join(parts) + f"{joined}concat=n={len(sources)}:v=1:a=1[v][a]"
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for p in sources:
        args += ["-i", str(p)]
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(CRF), "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", str(dst)]
    _run(args, "The clips could not be joined")
    return probe(dst)


def read_frames(
    path: Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    start: int = 0,
) -> Generator[np.ndarray, None, None]:
    """Yield RGB frames [H, W, 3] uint8, decoded by ffmpeg, optionally resampled in time (`fps`)
    and resized (`size` = (width, height)).

    `start`: the first frame to yield, in a constant-rate video (or at `fps`): ffmpeg seeks
    there (decoding from the keyframe before it, in its own process), so the frames before it
    never cross the pipe. The frames arrive through a pipe one at a time, so memory stays at one
    frame whatever the video's length.
    """
    info = probe(path)
    width, height = size or (info.width, info.height)
    filters = []
    seek: list[str] = []
    if fps is not None:
        filters.append(f"fps={fps}")
        if start > 0:
            # Counted after resampling (a seek would move the fps filter's time grid), and
            # before the scaling and RGB conversion, so skipped frames cost only decoding.
            filters.append(f"trim=start_frame={start},setpts=PTS-STARTPTS")
    elif start > 0:
        # Half a frame early: frame `start`'s timestamp is start / rate, and ffmpeg keeps the
        # frames at or after the position (rounding must not drop the first one); frames pass
        # with their own timestamps (a constant-rate output would repeat the first one).
        seek = ["-ss", f"{(start - 0.5) / (info.fps or ENGINE_FPS):.6f}"]
    if size is not None:
        filters.append(f"scale={width}:{height}:flags=area")
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *seek, "-i", str(path)]
    args += ["-map", "0:v:0"] + (["-vf", ",".join(filters)] if filters else [])
    args += ["-fps_mode", "passthrough"] if seek else []
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frame_bytes = width * height * 3
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stderr is not None
    _widen(proc.stdout)
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        lines = err.strip().splitlines()
        raise InvalidMedia(
            f"The video could not be decoded ({lines[-1] if lines else f'ffmpeg exit {code}'})."
        )


#: Linux's fcntl to resize a pipe (F_SETPIPE_SZ), and the size asked for: a 720p RGB frame is
#: 2.7 MB, and through the default 64 KB pipe every frame cost ~40 switches between ffmpeg and
#: this process (about a tenth of the reading time).
_F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


def _widen(pipe: Any) -> None:
    import fcntl

    try:
        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size, or not Linux: the default size works
        pass


def engine_size(info: VideoInfo, max_height: int = MAX_HEIGHT) -> tuple[int, int]:
    """(width, height) `normalise` gives `info`'s video: its size, made even, scaled down to
    `max_height` when taller (aspect kept).
    """
    height = min(max_height, info.height - info.height % 2)
    if height == info.height:
        width = info.width - info.width % 2
    else:
        width = max(2, round(info.width * height / info.height / 2) * 2)
    return width, height


def sample_frames(path: Path, count: int, *, height: int) -> tuple[np.ndarray, float]:
    """About `count` frames spread evenly over the video, scaled to `height` pixels tall.

    Returns the frames [n, height, W, 3] and the scale factor from original to sampled pixels;
    for cheap checks that need not look at every frame.
    """
    info = probe(path)
    height = min(height, info.height)
    height -= height % 2
    factor = height / info.height
    width = max(2, round(info.width * factor / 2) * 2)
    rate = count / max(info.duration_s, 1e-3)
    frames = list(read_frames(path, size=(width, height), fps=rate))[:count]
    if not frames:
        raise InvalidMedia("The video holds no frames that could be decoded.")
    return np.stack(frames), factor


def _run(args: list[str], what: str) -> None:
    proc = subprocess.run(
        args, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise InvalidMedia(f"{what} ({lines[-1] if lines else f'ffmpeg exit {proc.returncode}'}).")


def _rotation(stream: dict[str, object]) -> int:
    """Display rotation of a stream (phones record portrait video as rotated landscape)."""
    tags = stream.get("tags")
    if isinstance(tags, dict) and "rotate" in tags:
        return int(float(tags["rotate"])) % 360
    for side in stream.get("side_data_list", []) or []:  # type: ignore[attr-defined]
        if isinstance(side, dict) and "rotation" in side:
            return int(float(side["rotation"])) % 360
    return 0


def _rate(text: object) -> float | None:
    if not isinstance(text, str) or text in ("", "0/0"):
        return None
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
