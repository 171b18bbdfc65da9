"""Live calls: how fast the replica answers on a real call (issue 17's benchmark, not a timed
test). Turns from real recordings, answered by the platform's own LLM, measured at the far end.

The whole platform runs as processes on free ports under a temporary run folder, as for
`make up` (PostgreSQL, Redis, Triton, the platform's LLM: llama.cpp with Qwen2.5-Coder-0.5B,
the API with `DOPPEL_ICE_LOOPBACK=1`, so every packet stays on 127.0.0.1). The trained replica
(`--replica DIR`, default ~/.cache/doppel/quality/replica_obama, the one `make quality` trains)
is registered for a benchmark tenant as completed; a persona without an LLM layer (so the
platform's LLM answers) uses it. Each call is a conversation joined over WebRTC by an aiortc
client peer (benchmarks/live/client.py) whose microphone plays real recordings in real time
(four LJ Speech clips and JFK's last phrase, ~3 s), then silence; each turn waits for the reply to
play out (`conversation.replica.stopped_speaking`) before the next.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.live [--turns 20]
        [--stream-height 360] [--quick]

What is measured, at the client (arrival times of what it receives):
- end of the person's speech (when the Mic track sent the recording's last loud 10 ms; the
  recording's speech span comes from its energy) -> first replica audio received (the first
  audio frame after it with RMS > 0.01) and -> `conversation.replica.started_speaking`
  received (sent at playout); also -> the first received video frame whose mouth region leaves
  the listening loop and stays off it (`first_frame`: the mouth's coarse shape against the
  call's first seconds of listening), the first speaking frame as seen;
- the server's per-stage timeline of each turn (`GET /v2/conversations/{id}?verbose=true` ->
  `turns`: seconds from the end of the person's speech to each stage), medians;
- received video: sustained fps and the inter-frame arrival gap p99, per call (and while
  speaking);
- A/V offset of the received stream: each track's RTCP sender reports map its RTP time to the
  sender's wall clock (as a browser lip-syncs); for each video frame, the arrival of the audio
  of the same sender instant minus the frame's arrival (positive: audio after video);
- barge-in: a second recording played over the reply ~1 s after its audio starts; its speech
  onset (when sent) -> the received audio staying below RMS 0.005 in 40 ms windows.

Writes `benchmarks/results/live.md` and `live.json` (`live_quick.*` with --quick; `--out NAME`
for another name; `--reanalyse` recomputes the figures and the report from a saved json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from av import VideoFrame

from benchmarks.e2e.video_rtf import DEFAULT_REPLICA, RESULTS, SHARED, register
from benchmarks.live.client import (
    Client,
    Mic,
    event,
    join,
    mouth_box,
    rms,
    rms_of,
    sender_wall,
    until,
)
from doppel.audio.media import decode_audio
from doppel.live import session
from doppel.platform.stack import LocalPlatform
from doppel.replica import layout
from doppel.replica.artefact import Replica
from doppel.settings import Settings

RATE = 48000
GOAL_P50_S = 2.0
GOAL_P95_S = 3.0
GOAL_AV_S = 0.045  # ITU-R BT.1359: audio 45 ms early is noticed (125 ms late)
VOICED = 0.01  # RMS of a received audio frame holding the replica's voice
QUIET = 0.005  # RMS of a 40 ms window counted as silent (barge-in)
IDLE_S = 6.0  # listening at the start of a call: the mouth's reference frames
PROMPT = (
    "You are a friendly guide at a history museum, talking with a visitor on a video call. "
    "Answer in one or two short sentences."
)
#: (name, path under the shared data, (from, to) seconds kept, None for all). JFK's is its
#: last phrase, "ask what you can do for your country" (~3 s): the opening ~4 s hold a 1.2 s
#: pause, which ends the person's turn (0.7 s) and splits it into two.
RECORDINGS: list[tuple[str, tuple[str, ...], tuple[float, float] | None]] = [
    ("LJ001-0002", ("speech", "ljspeech", "wavs", "LJ001-0002.wav"), None),
    ("LJ001-0013", ("speech", "ljspeech", "wavs", "LJ001-0013.wav"), None),
    ("jfk", ("speech", "jfk.flac"), (7.9, 11.0)),
    ("LJ001-0011", ("speech", "ljspeech", "wavs", "LJ001-0011.wav"), None),
    ("LJ001-0020", ("speech", "ljspeech", "wavs", "LJ001-0020.wav"), None),
]


@dataclass
class Recording:
    name: str
    samples: np.ndarray  # 48 kHz mono
    onset: int  # first loud sample
    end: int  # last loud sample

    @property
    def speech_s(self) -> float:
        return (self.end - self.onset) / RATE


def speech_span(samples: np.ndarray) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within 20 dB of the loud ones."""
    hop = RATE // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    level = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(level > max(0.005, 0.1 * np.percentile(level, 95)))
    return int(loud[0] * hop), int((loud[-1] + 1) * hop - 1)


async def recordings() -> list[Recording]:
    out = []
    for name, parts, span in RECORDINGS:
        path = SHARED.joinpath(*parts)
        if not path.exists():
            raise SystemExit(f"needs the real test data ({path} is missing)")
        samples = (await decode_audio(path, RATE)).samples.astype(np.float32)
        if span is not None:
            samples = samples[int(span[0] * RATE) : int(span[1] * RATE)]
        onset, end = speech_span(samples)
        out.append(Recording(name, samples, onset, end))
    return out


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    got = [float(v) for v in values if v is not None]
    return {
        "n": len(got),
        "missing": len(values) - len(got),
        "p50": pct(got, 50),
        "p95": pct(got, 95),
        "min": min(got, default=None),
        "max": max(got, default=None),
    }


async def next_event(
    peer: Client, event_type: str, timeout_s: float, after: float
) -> tuple[float, dict[str, Any]]:
    """The next `event_type` that arrived after `after`, with its arrival time."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await event(peer, event_type, max(0.1, deadline - time.monotonic()))
        at = peer.arrival(got)
        if at >= after:
            return at, got


def first_voiced(peer: Client, after: float) -> float | None:
    return next((t for t, _, a in peer.audio if t > after and rms_of(a) > VOICED), None)


class Call:
    """One conversation joined over WebRTC, its turns and what the client measured."""

    def __init__(self, http: httpx.AsyncClient, persona_id: str, replica: Replica) -> None:
        self.http, self.persona_id, self.replica = http, persona_id, replica
        self.box: tuple[slice, slice] | None = None
        self.turns: list[dict[str, Any]] = []
        self.barge_ins: list[dict[str, Any]] = []
        self.speaking: list[tuple[float, float]] = []  # (started, stopped) arrivals

    def keep(self, frame: VideoFrame) -> np.ndarray:
        """The mouth region of a received frame, grey, at half resolution (memory)."""
        if self.box is None:
            self.box = mouth_box(self.replica, (frame.width, frame.height))
        rows, cols = self.box
        return frame.to_ndarray(format="gray")[rows, cols][::2, ::2].copy()

    async def start(self) -> None:
        made = await self.http.post(
            "/v2/conversations",
            json={"persona_id": self.persona_id, "conversation_name": "live benchmark"},
        )
        made.raise_for_status()
        self.cid = str(made.json()["conversation_id"])
        self.mic = Mic(np.zeros(RATE, np.float32))
        self.peer = await join(self.http, self.cid, self.mic, keep=self.keep)
        await event(self.peer, "system.replica_joined", 60)
        await until(lambda: len(self.peer.video) > 10 and self.peer.audio, 30, "media")
        self.idle_from = time.monotonic()
        await asyncio.sleep(IDLE_S)

    async def _said(self, rec: Recording) -> tuple[int, float]:
        """Play `rec`; returns its position in the mic's stream and when it was queued."""
        return self.mic.say(rec.samples), time.monotonic()

    async def _sent(self, position: int, timeout_s: float) -> float:
        await until(lambda: self.mic.sent_at(position) is not None, timeout_s, "mic frame sent")
        at = self.mic.sent_at(position)
        assert at is not None
        return at

    async def turn(self, rec: Recording) -> dict[str, Any]:
        result: dict[str, Any] = {
            "recording": rec.name,
            "call": self.cid,
            "speech_s": rec.speech_s,
        }
        base, queued = await self._said(rec)
        try:
            onset = await self._sent(base + rec.onset, 30)
            end = await self._sent(base + rec.end, 60)
            result.update(onset=onset, end=end)
            result["end_wall"] = time.time() - (time.monotonic() - end)
            started, _ = await next_event(
                self.peer, "conversation.replica.started_speaking", 90, queued
            )
            stopped, said = await next_event(
                self.peer, "conversation.replica.stopped_speaking", 180, started
            )
            self.speaking.append((started, stopped))
            await asyncio.sleep(0.3)
            first_audio = first_voiced(self.peer, end)
            result.update(
                started_event=started,
                stopped_event=stopped,
                first_audio=first_audio,
                to_first_audio_s=None if first_audio is None else first_audio - end,
                to_started_event_s=started - end,
                early=started < end,
                reply_s=stopped - started,
                interrupted=bool(said["properties"].get("interrupted")),
            )
        except AssertionError as exc:
            result["error"] = str(exc)[:300]
        await asyncio.sleep(1.0)
        return result

    async def barge_in(self, first: Recording, over: Recording) -> dict[str, Any]:
        """`over` played ~1 s into the reply to `first`: its onset -> the replica silent."""
        result: dict[str, Any] = {"recording": first.name, "over": over.name, "call": self.cid}
        base, queued = await self._said(first)
        try:
            end = await self._sent(base + first.end, 60)
            started, _ = await next_event(
                self.peer, "conversation.replica.started_speaking", 90, queued
            )
            await until(lambda: first_voiced(self.peer, end) is not None, 10, "its voice")
            voiced = first_voiced(self.peer, end)
            assert voiced is not None
            await asyncio.sleep(max(0.0, voiced + 1.0 - time.monotonic()))
            base, _ = await self._said(over)
            onset = await self._sent(base + over.onset, 10)
            horizon = min(2.0, over.speech_s)
            await asyncio.sleep(max(0.0, onset + horizon + 0.3 - time.monotonic()))
            windows = [
                rms(
                    [
                        r
                        for r in self.peer.audio
                        if onset + k * 0.04 <= r[0] < onset + k * 0.04 + 0.04
                    ]
                )
                for k in range(int(horizon / 0.04))
            ]
            before = rms([r for r in self.peer.audio if onset - 0.2 <= r[0] < onset])
            quiet = next((k for k in range(len(windows)) if max(windows[k:]) < QUIET), None)
            result.update(
                speaking_at_onset=before > VOICED,
                rms_before=round(before, 4),
                stop_s=None if quiet is None else quiet * 0.04,
            )
            stopped, said = await next_event(
                self.peer, "conversation.replica.stopped_speaking", 30, started
            )
            self.speaking.append((started, stopped))
            result["interrupted"] = bool(said["properties"].get("interrupted"))
        except AssertionError as exc:
            result["error"] = str(exc)[:300]
        return result

    async def finish(self) -> dict[str, Any]:
        """End the call, read the server's turns, and measure the received media."""
        await self.http.post(f"/v2/conversations/{self.cid}/end")
        await asyncio.sleep(0.5)
        await self.peer.close()
        server: list[dict[str, Any]] = []
        body: dict[str, Any] = {}
        for _ in range(50):
            body = (await self.http.get(f"/v2/conversations/{self.cid}?verbose=true")).json()
            server = body.get("turns") or []
            if len([t for t in server if t.get("source") == "speech"]) >= len(self.turns):
                break
            await asyncio.sleep(0.2)
        for turn in self.turns:
            turn["server"] = match(server, turn.get("end_wall"))
        media = {**video_rates(self.peer, self.speaking), **av_offset(self.peer)}
        self.mouth_onsets()
        self.peer.video.clear()  # the crops are large: gone once measured
        self.peer.audio.clear()
        return {
            "conversation_id": self.cid,
            "media": media,
            "server_turns": server,
            "transcript": body.get("transcript"),
        }

    def mouth_onsets(self) -> None:
        """Each turn's first received frame whose mouth leaves the listening loop."""
        video = self.peer.video
        ref = [f for t, _, f in video if self.idle_from <= t < self.idle_from + IDLE_S]
        if not ref:
            return
        refs = np.stack([coarse(f) for f in ref])

        def off(frame: np.ndarray) -> float:
            return float(np.abs(refs - coarse(frame)).mean(axis=(1, 2)).min())

        for turn in self.turns:
            if "stopped_event" not in turn:
                continue
            end = turn["end"]
            calm = [off(f) for t, _, f in video if turn["onset"] + 0.3 <= t < end]
            after = [(t - end, off(f)) for t, _, f in video if end < t < turn["stopped_event"]]
            turn["mouth"] = {
                "listening": [round(d, 2) for d in calm],
                "after": [(round(t, 3), round(d, 2)) for t, d in after],
            }
            first_frame(turn)


def coarse(crop: np.ndarray) -> np.ndarray:
    """The mouth crop in 4x4 blocks, less its mean: the mouth's shape, not the codec's detail
    or level (its quality follows the bandwidth estimate, which CPU load moves).
    """
    h, w = crop.shape[0] // 4 * 4, crop.shape[1] // 4 * 4
    blocks = crop[:h, :w].astype(np.float32).reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
    return blocks - blocks.mean()


#: A speaking mouth: most frames of this long off the listening loop (brief departures while
#: listening, ~1 s at most, are the codec's: a keyframe, a quality step).
SPEAKING_S = 1.2


def first_frame(turn: dict[str, Any]) -> None:
    """The turn's first frame further from every listening frame than twice the median
    listening frame is (+1 level), with 80 % of the frames of the next SPEAKING_S so too.
    """
    calm, after = turn["mouth"]["listening"], turn["mouth"]["after"]
    turn.pop("to_first_frame_s", None)
    if not calm or not after:
        return
    limit = 2 * float(np.median(calm)) + 1.0
    times = np.array([t for t, _ in after])
    off = np.array([d for _, d in after]) > limit
    for i in np.flatnonzero(off):
        window = off[(times >= times[i]) & (times < times[i] + SPEAKING_S)]
        if times[i] + SPEAKING_S <= times[-1] and window.mean() >= 0.8:
            turn["to_first_frame_s"] = float(times[i])
            return


def match(server: list[dict[str, Any]], wall: float | None) -> dict[str, Any] | None:
    """The server's speech turn whose start (the end of speech it saw) is nearest `wall`."""
    if wall is None:
        return None
    near = [t for t in server if t.get("source") == "speech" and abs(t["at"] - wall) < 2.0]
    return min(near, key=lambda t: abs(t["at"] - wall), default=None)


def video_rates(peer: Client, speaking: list[tuple[float, float]]) -> dict[str, Any]:
    arrivals = np.array([t for t, _, _ in peer.video])
    if len(arrivals) < 50:
        return {}
    arrivals = arrivals[arrivals > arrivals[0] + 1.0]  # past the first second (start-up)
    gaps = np.diff(arrivals)
    talking = np.concatenate(
        [np.diff(arrivals[(arrivals >= a) & (arrivals < b)]) for a, b in speaking] or [np.zeros(0)]
    )
    spoken_s = sum(b - a for a, b in speaking)
    spoken_n = sum(int(((arrivals >= a) & (arrivals < b)).sum()) for a, b in speaking)
    return {
        "fps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        "gap_p99_ms": 1000 * float(np.percentile(gaps, 99)),
        "gap_max_ms": 1000 * float(gaps.max()),
        "speaking_fps": spoken_n / spoken_s if spoken_s else None,
        "speaking_gap_p99_ms": 1000 * float(np.percentile(talking, 99)) if len(talking) else None,
        "seconds": float(arrivals[-1] - arrivals[0]),
    }


def offsets(
    audio: list[tuple[float, int]],
    video: list[tuple[float, int]],
    audio_wall: Callable[[int], float],
    video_wall: Callable[[int], float],
) -> list[float]:
    """For each video frame (arrival, RTP timestamp) past the call's first 2 s: the arrival of
    the audio of the same sender instant minus the frame's (positive: audio after video).
    """
    if not audio or not video:
        return []
    paired = sorted((audio_wall(r), t) for t, r in audio)
    wall_a = np.array([w for w, _ in paired])
    arrive_a = np.maximum.accumulate(np.array([t for _, t in paired]))
    t0 = video[0][0] + 2.0
    out = []
    for t, r in video:
        w = video_wall(r)
        if t >= t0 and wall_a[0] <= w <= wall_a[-1]:
            out.append(float(np.interp(w, wall_a, arrive_a)) - t)
    return out


def av_offset(peer: Client) -> dict[str, Any]:
    """A/V offset of the packets as they arrive (the stream), and of the frames aiortc
    decodes (after its jitter buffers: audio waits for 4 packets, video for the next frame).
    """
    wa = sender_wall(peer.reports["audio"], RATE)
    wv = sender_wall(peer.reports["video"], 90000)
    origin_a, origin_v = peer.rtp_origin("audio"), peer.rtp_origin("video")
    if wa is None or wv is None or origin_a is None or origin_v is None:
        return {"av_offsets_ms": [], "decoded_av_offsets_ms": []}
    wire = offsets(peer.packets["audio"], peer.packets["video"], wa, wv)
    decoded = offsets(
        [(t, (p + origin_a) % 2**32) for t, p, _ in peer.audio],
        [(t, (p + origin_v) % 2**32) for t, p, _ in peer.video],
        wa,
        wv,
    )
    return {
        "av_offsets_ms": [round(1000 * o) for o in wire],
        "decoded_av_offsets_ms": [round(1000 * o) for o in decoded],
        "sender_reports": {k: len(v) for k, v in peer.reports.items()},
    }


STAGES = [f"{stage}_s" for stage in session.STAGES]


def analyse(
    turns: list[dict[str, Any]], barge: list[dict[str, Any]], calls: list[dict[str, Any]]
) -> dict[str, Any]:
    ok = [t for t in turns if "error" not in t]
    wire = [o / 1000 for c in calls for o in c["media"].get("av_offsets_ms", [])]
    decoded = [o / 1000 for c in calls for o in c["media"].get("decoded_av_offsets_ms", [])]
    stage_keys = sorted(
        {k for t in ok if t.get("server") for k in t["server"] if k.endswith("_s")},
        key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k),
    )
    stages = {k: summary([t["server"].get(k) for t in ok if t.get("server")]) for k in stage_keys}
    steps: dict[str, list[float]] = {}
    for t in ok:
        server = t.get("server") or {}
        times = [(k, server[k]) for k in stage_keys if server.get(k) is not None]
        for (_, a), (k, b) in zip(times, times[1:], strict=False):
            steps.setdefault(k, []).append(b - a)
        if times:
            steps.setdefault(stage_keys[0], []).append(times[0][1])
    delivery = [
        t["to_first_audio_s"] - t["server"]["first_audio_s"]
        for t in ok
        if (t.get("server") or {}).get("first_audio_s") is not None
        and t.get("to_first_audio_s") is not None
    ]
    seen_late = [
        t["server"]["at"] - t["end_wall"] for t in ok if t.get("server") and t.get("end_wall")
    ]
    media = [c["media"] for c in calls if c["media"].get("fps")]
    valid_barge = [b for b in barge if b.get("interrupted")]  # the reply was cut: it spoke
    return {
        "turns": len(turns),
        "failed": len(turns) - len(ok),
        "early": sum(1 for t in ok if t.get("early")),
        "first_audio": summary([t.get("to_first_audio_s") for t in turns]),
        "started_event": summary([t.get("to_started_event_s") for t in turns]),
        "first_frame": summary([t.get("to_first_frame_s") for t in turns]),
        # the server renders a turn's first frame with its first audio: a mouth seen moving
        # 0.5 s or more before the voice arrives is the pixel test misled
        "first_frame_before_audio": sum(
            1
            for t in ok
            if t.get("to_first_frame_s") is not None
            and t.get("to_first_audio_s") is not None
            and t["to_first_frame_s"] < t["to_first_audio_s"] - 0.5
        ),
        "server_matched": sum(1 for t in ok if t.get("server")),
        "stages": stages,
        "steps": {k: summary(steps.get(k, [])) for k in stage_keys},
        "delivery_s": summary(delivery),
        "server_end_after_client_s": summary(seen_late),
        "fps": summary([m["fps"] for m in media]),
        "gap_p99_ms": summary([m["gap_p99_ms"] for m in media]),
        "speaking_fps": summary([m.get("speaking_fps") for m in media]),
        "speaking_gap_p99_ms": summary([m.get("speaking_gap_p99_ms") for m in media]),
        "av_offset_s": summary(wire),
        "av_abs_offset_s": summary([abs(o) for o in wire]),
        "decoded_av_offset_s": summary(decoded),
        "barge_in_stop_s": summary([b.get("stop_s") for b in valid_barge]),
        "barge_in_valid": len(valid_barge),
    }


def fmt(v: float | None, unit: str = "s", scale: float = 1.0) -> str:
    if v is None:
        return "-"
    v *= scale
    return f"{v:.0f} {unit}" if unit == "ms" else f"{v:.2f} {unit}".strip()


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def closing(res: dict[str, Any]) -> list[str]:
    """What would close the gap to the goal, from the stage steps measured."""
    p50 = res["first_audio"]["p50"]
    steps = {k: v["p50"] for k, v in res["steps"].items()}
    if p50 is None or p50 <= GOAL_P50_S or not steps:
        return []

    def step(k: str) -> str:
        return fmt(steps.get(k))

    return [
        "## What would close the rest",
        "",
        f"p50 is {p50:.2f} s: {p50 - GOAL_P50_S:.2f} s over the goal. By step (p50): the "
        f"end-of-turn silence {step('turn_detected_s')}, Whisper {step('transcript_s')}, the "
        f"LLM's first text {step('llm_first_text_s')} and first sentence "
        f"{step('first_sentence_s')}, the voice {step('voice_s')}, the render lead before "
        f"playout {step('rendered_s')}, delivery {fmt(res['delivery_s']['p50'])}.",
        "",
        "- Render lead: playback waits until enough of the sentence is rendered that it cannot "
        "catch up (`Avatar.lead_for`); at the render rate on 2 cores that is most of it. A "
        "render at >= 25 fps (a GPU: the lead falls to the first chunk), a smaller first chunk, "
        "or a first clause instead of a first sentence shrink it.",
        "- LLM: prefill and first tokens of Qwen2.5 0.5B on 2 cores, shared with the call's "
        "VP8 encoding (and, here, the client peer's decoding); a short history and releasing "
        "the first clause cut the first-text and first-sentence steps; a GPU or a hosted model "
        "takes them to ~0.3-0.5 s (the anchors' LLM first token 0.42 s).",
        "- Turn end: 0.7 s of silence (`participant_pause_sensitivity: medium`); `high` is "
        "0.45 s; a semantic end-of-turn model lets it fall further on complete sentences.",
        "- Whisper and the voice: ~0.5 s each on 2 cores; a GPU makes both ~0.1 s.",
        "",
        "An estimate from the anchors, not measured here: with a GPU and the 0.45 s pause, "
        "0.45 (pause) + 0.1 (Whisper) + 0.4 (LLM first text) + 0.3 (to the first clause) + "
        "0.1 (voice) + 0.2 (first render chunk) + 0.3 (delivery) ~= 1.9 s: at the goal, not at "
        "Tavus's 0.6 s. On these 2 cores alone the goal is out of reach without a much "
        "smaller render lead and a much faster first sentence.",
        "",
    ]


def report(res: dict[str, Any], meta: dict[str, Any], turns: list[dict[str, Any]]) -> str:
    fa = res["first_audio"]
    av = res["av_abs_offset_s"]
    p50, p95 = fa["p50"], fa["p95"]
    rows = [
        (
            "end of speech -> first replica audio received",
            fa,
            "s",
            1,
            f"p50 <= {GOAL_P50_S} s, p95 <= {GOAL_P95_S} s",
            None if p50 is None else (p50 <= GOAL_P50_S, p95 <= GOAL_P95_S),
        ),
        (
            "end of speech -> started_speaking event received",
            res["started_event"],
            "s",
            1,
            "",
            None,
        ),
        (
            "end of speech -> first speaking frame (mouth off the loop)",
            res["first_frame"],
            "s",
            1,
            "",
            None,
        ),
        ("received video fps (per call)", res["fps"], "", 1, ">= 24", None),
        ("inter-frame arrival gap p99 (per call)", res["gap_p99_ms"], "ms", 1, "", None),
        ("received fps while speaking (per call)", res["speaking_fps"], "", 1, ">= 24", None),
        (
            "A/V offset as received, signed (audio after video: +)",
            res["av_offset_s"],
            "ms",
            1000,
            "",
            None,
        ),
        (
            "abs(A/V offset) as received",
            av,
            "ms",
            1000,
            "<= 45 ms",
            None if av["p50"] is None else (av["p50"] <= GOAL_AV_S, av["p95"] <= GOAL_AV_S),
        ),
        (
            "A/V offset as aiortc decodes (its jitter buffers), signed",
            res["decoded_av_offset_s"],
            "ms",
            1000,
            "",
            None,
        ),
        ("barge-in: onset -> replica silent", res["barge_in_stop_s"], "s", 1, "", None),
    ]
    height = meta["stream_height"] or "the replica's own"
    lines = [
        "# Live calls: latency at the far end of a WebRTC call",
        "",
        f"Measured {meta.get('measured', '?')} on this machine "
        f"({meta['cores']} cores, CPU only; the client peer, decoding 25 fps VP8, shares them). "
        f"Replica: {meta['replica']}; stream height: {height}; "
        f"levers: {meta.get('levers', '?')}; "
        f"LLM: the platform's ({meta['llm_model']}); {res['turns']} turns over "
        f"{meta['calls']} calls from {len(meta['recordings'])} recordings "
        f"({', '.join(meta['recordings'])}), {res['failed']} failed, {res['early']} answered "
        f"before the recording ended; {res['barge_in_valid']} valid barge-ins.",
        "",
        "| measure | n | p50 | p95 | min | max | goal | verdict (p50 / p95) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s, unit, scale, goal, ok in rows:
        judged = "-" if ok is None else f"{verdict(ok[0])} / {verdict(ok[1])}"
        lines.append(
            f"| {name} | {s['n']} | {fmt(s['p50'], unit, scale)} | {fmt(s['p95'], unit, scale)} "
            f"| {fmt(s['min'], unit, scale)} | {fmt(s['max'], unit, scale)} | {goal} | {judged} |"
        )
    lines += [
        "",
        f"The first speaking frame is a pixel test on the decoded stream (the mouth region "
        f"against the call's first {IDLE_S:.0f} s of listening): in "
        f"{res.get('first_frame_before_audio', '?')} of {res['first_frame']['n']} turns it fired "
        "0.5 s or more before the voice arrived, which the server never does (it plays a turn's "
        "first frame and first audio in one slot): there, codec quality changes under CPU load "
        "moved it. `started_speaking` (sent at playout) is the reliable marker. A/V offset: "
        "each track's RTCP sender reports map its RTP time to the sender's wall clock; the "
        "signed offset is audio arrival minus video arrival for the same sender instant, on "
        "the wire (packets) and after aiortc's jitter buffers (audio waits for 4 packets).",
        "",
        "## The server's stages (seconds from the end of the person's speech)",
        "",
    ]
    if res["stages"]:
        lines += [
            "| stage | n | p50 | p95 | step from the stage before, p50 | p95 |",
            "|---|---|---|---|---|---|",
        ]
        for k, s in res["stages"].items():
            step = res["steps"].get(k, {})
            lines.append(
                f"| {k} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} | "
                f"{fmt(step.get('p50'))} | {fmt(step.get('p95'))} |"
            )
        d, late = res["delivery_s"], res.get("server_end_after_client_s", {})
        lines += [
            f"| (client) first replica audio received, minus the server's first_audio_s "
            f"| {d['n']} | {fmt(d['p50'])} | {fmt(d['p95'])} | | |",
            "",
            "The server counts from the end of speech its VAD saw, "
            f"{fmt(late.get('p50'))} (p50) after the client sent it; the rest of the delivery "
            "row is the slot's send, loopback and aiortc's audio jitter buffer (4 packets).",
            "",
        ]
        lines += closing(res)
        lines.append(
            f"{res['server_matched']} of {res['turns'] - res['failed']} turns matched to a server "
            "turn (its `at` within 2 s of the client's end of speech)."
        )
    else:
        lines.append("The server returned no per-turn timings (`turns` empty).")
    lines += [
        "",
        "## Turns",
        "",
        "| call | turn | recording | speech s | -> first audio | -> started_speaking "
        "| -> first frame off the loop | reply s | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    calls: dict[str, int] = {}
    for t in turns:
        c = calls.setdefault(t["call"], len(calls) + 1)
        n = sum(1 for u in turns[: turns.index(t) + 1] if u["call"] == t["call"])
        lines.append(
            f"| {c} | {n} | {t['recording']} | {fmt(t.get('speech_s'))} | "
            f"{fmt(t.get('to_first_audio_s'))} | {fmt(t.get('to_started_event_s'))} | "
            f"{fmt(t.get('to_first_frame_s'))} | {fmt(t.get('reply_s'))} | "
            f"{t.get('error', '')} |"
        )
    lines.append("")
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    """The platform a live benchmark runs against, with a tenant's client and a persona."""

    platform: LocalPlatform
    endpoints: dict[str, str]
    settings: Settings
    http: httpx.AsyncClient
    persona_id: str
    replica: Replica
    replica_dir: Path


@contextlib.asynccontextmanager
async def live_stack(
    replica_dir: Path | None, tenant: str, stream_height: int | None = None
) -> AsyncIterator[Stack]:
    """The whole platform started from scratch in a temporary run folder (ICE on loopback), a
    tenant holding the trained replica and a persona of it; stopped and removed after.
    `stream_height`: DOPPEL_STREAM_HEIGHT for the API (0: the replica's own; None: default).
    """
    replica_dir = replica_dir or DEFAULT_REPLICA
    if not (replica_dir / layout.META).exists():
        raise SystemExit(f"no trained replica at {replica_dir}: run `make quality` first")
    replica = Replica.load(replica_dir)
    run_dir = Path(tempfile.mkdtemp(prefix=f"doppel-{tenant}-"))
    env = dict(os.environ, DOPPEL_EPHEMERAL="1", DOPPEL_ICE_LOOPBACK="1")
    for var in ("DATABASE_URL", "REDIS_URL", "TRITON_GRPC_URL", "TRITON_HTTP_URL"):
        env.pop(var, None)
    env.pop("DOPPEL_STREAM_HEIGHT", None)
    if stream_height is not None:
        env["DOPPEL_STREAM_HEIGHT"] = str(stream_height)
    platform = LocalPlatform(run_dir, env=env)
    try:
        endpoints = await asyncio.to_thread(platform.up, fixed_ports=False, with_app=True)
        settings = Settings.from_env({**env, "DOPPEL_RUN_DIR": str(run_dir)})
        key, rid = await register(settings, replica_dir, tenant)
        async with httpx.AsyncClient(
            base_url=endpoints["api"], headers={"x-api-key": key}, timeout=120
        ) as http:
            made = await http.post(
                "/v2/personas", json={"system_prompt": PROMPT, "default_replica_id": rid}
            )
            made.raise_for_status()
            yield Stack(
                platform,
                endpoints,
                settings,
                http,
                made.json()["persona_id"],
                replica,
                replica_dir,
            )
    finally:
        await asyncio.to_thread(platform.down)
        shutil.rmtree(run_dir, ignore_errors=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    recs = await recordings()
    turns: list[dict[str, Any]] = []
    barge: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    async with live_stack(args.replica, "live-benchmark", args.stream_height) as stack:
        settings, endpoints, replica_dir = stack.settings, stack.endpoints, stack.replica_dir
        n_calls = min(args.calls, args.turns)
        per_call = [args.turns // n_calls + (i < args.turns % n_calls) for i in range(n_calls)]
        k = 0
        for c, count in enumerate(per_call):
            call = Call(stack.http, stack.persona_id, stack.replica)
            await call.start()
            for _ in range(count):
                result = await call.turn(recs[k % len(recs)])
                k += 1
                call.turns.append(result)
                print(f"call {c + 1} turn {len(call.turns)}: {brief(result)}", flush=True)
            if c < args.barge_ins:
                first, over = recs[(c + 2) % len(recs)], max(recs, key=lambda r: r.speech_s)
                b = await call.barge_in(first, over)
                call.barge_ins.append(b)
                print(f"call {c + 1} barge-in: {brief(b)}", flush=True)
            calls.append(await call.finish())
            turns += call.turns
            barge += call.barge_ins
    meta = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "replica": str(replica_dir),
        "cores": os.cpu_count(),
        "stream_height": settings.stream_height,
        "levers": {
            "first_clause_chars": settings.first_clause_chars,
            "early_transcript_s": settings.early_transcript_s,
        },
        "llm_model": endpoints.get("llm_model", ""),
        "calls": len(calls),
        "recordings": [f"{r.name} ({r.speech_s:.1f} s)" for r in recs],
    }
    return {
        "meta": meta,
        "results": analyse(turns, barge, calls),
        "turns": turns,
        "barge_ins": barge,
        "calls": calls,
    }


def brief(result: dict[str, Any]) -> str:
    keep = (
        "recording",
        "over",
        "to_first_audio_s",
        "to_started_event_s",
        "to_first_frame_s",
        "stop_s",
        "speaking_at_onset",
        "early",
        "error",
    )
    return json.dumps(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k in keep}
    )


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def compact(data: dict[str, Any]) -> str:
    """JSON with one line per turn, barge-in and call (their series are long)."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list):
            rows = ",\n  ".join(json.dumps(v, separators=(",", ":")) for v in value)
            parts.append(f"{json.dumps(key)}: [\n  {rows}\n]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, indent=1)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", type=Path, help="trained replica folder")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5, help="conversations the turns share")
    parser.add_argument("--barge-ins", type=int, default=3, help="extra turns talked over")
    parser.add_argument(
        "--stream-height",
        type=int,
        help="DOPPEL_STREAM_HEIGHT for the API (0: the replica's own; default: the platform's)",
    )
    parser.add_argument("--quick", action="store_true", help="3 turns, 1 call, 1 barge-in")
    parser.add_argument(
        "--out", help="results file name, no suffix (default: live, or live_quick with --quick)"
    )
    parser.add_argument(
        "--reanalyse", action="store_true", help="recompute the results of the saved --out json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.calls, args.barge_ins = 3, 1, 1
    args.out = args.out or ("live_quick" if args.quick else "live")
    if args.reanalyse:
        data = json.loads((RESULTS / f"{args.out}.json").read_text())
        spans = {r.name: r.speech_s for r in await recordings()}
        for turn in data["turns"]:
            turn.setdefault("speech_s", spans.get(turn["recording"]))
            if "mouth" in turn:
                first_frame(turn)
        data["results"] = jsonable(analyse(data["turns"], data["barge_ins"], data["calls"]))
    else:
        data = jsonable(await run(args))
    text = report(data["results"], data["meta"], data["turns"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(compact(data))
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    return 0
