"""Soak: one long live call (20 minutes, a turn every 20 s by default) against the whole platform
started from scratch, the client an aiortc peer on loopback as in the latency benchmark.

What it reports, turn by turn and as first-vs-last comparisons:
- end of the person's speech -> the first received audio of the reply (`to_first_audio_s`),
  and whether every turn was answered;
- received video fps in each turn's window (frames that arrived / seconds), and the largest
  inter-frame gap;
- memory (RSS) of the serving processes, each with its process group (Triton's Python backend
  stubs, the LLM server's workers): after the first turn and after the last;
- ICE/DTLS trouble: the client's peer connection state changes and every aioice/aiortc log
  record at WARNING or above, on the client and in the API's log.

    python -m benchmarks.live.soak [--minutes 20] [--every 20] [--out live_soak]

Writes `benchmarks/results/<out>.md` and `.json`. A benchmark, not a test: it takes the minutes
it says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.e2e.video_rtf import RESULTS
from benchmarks.live.latency import Call, live_stack, pct, recordings
from doppel.platform.stack import LocalPlatform

SERVING = ("api", "triton", "llm")
GOAL_GROWTH_MB = 100.0
#: What the API's log says when ICE or DTLS go wrong.
TROUBLE = re.compile(r"(aioice|aiortc|dtls|ice)\S*.*\b(ERROR|WARNING|failed|Failed)\b")


def group_rss_mb(leader: int) -> float:
    """RSS of `leader`'s process group (the platform starts each service in its own)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != leader:  # pgrp
                continue
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            total += int(m[1])
    return total / 1024


def memory(platform: LocalPlatform) -> dict[str, float]:
    out = {}
    for name in SERVING:
        record = platform.managed(name)
        if record is not None and record.alive():
            out[name] = round(group_rss_mb(record.pid), 1)
    return out


class Trouble(logging.Handler):
    """Keeps the client's aioice/aiortc records at WARNING and above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("aioice", "aiortc")):
            self.records.append(f"{record.name}: {record.getMessage()}"[:300])


def window_fps(call: Call, t0: float, t1: float) -> tuple[float, float]:
    """Video frames that arrived in [t0, t1) per second, and the largest gap (ms)."""
    times = np.array([t for t, _, _ in call.peer.video if t0 <= t < t1])
    if len(times) < 2:
        return 0.0, float("inf")
    return len(times) / (t1 - t0), float(np.diff(times).max() * 1000)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    recs = await recordings()
    trouble = Trouble()
    logging.getLogger().addHandler(trouble)
    turns: list[dict[str, Any]] = []
    states: list[tuple[float, str]] = []
    mem: list[dict[str, Any]] = []
    api_log: list[str] = []
    try:
        async with live_stack(args.replica, "soak-benchmark") as stack:
            platform, settings, endpoints = stack.platform, stack.settings, stack.endpoints
            call = Call(stack.http, stack.persona_id, stack.replica)
            await call.start()
            t_start = time.monotonic()
            call.peer.pc.on(
                "connectionstatechange",
                lambda: states.append((time.monotonic() - t_start, call.peer.pc.connectionState)),
            )
            deadline = t_start + args.minutes * 60
            k = 0
            while time.monotonic() + args.every <= deadline + 1:
                slot = t_start + k * args.every
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                result = await call.turn(recs[k % len(recs)])
                end_of_window = slot + args.every
                await asyncio.sleep(max(0.0, end_of_window - time.monotonic() - 0.05))
                fps, gap = window_fps(call, slot, min(time.monotonic(), end_of_window))
                result.update(
                    turn=k + 1,
                    at_s=round(slot - t_start, 1),
                    fps=round(fps, 2),
                    gap_max_ms=round(gap, 1),
                    state=call.peer.pc.connectionState,
                )
                mem.append({"turn": k + 1, **memory(platform)})
                turns.append(result)
                print(
                    f"turn {k + 1} at {result['at_s']:.0f} s: first audio "
                    f"{result.get('to_first_audio_s')} s, {fps:.1f} fps, gap {gap:.0f} ms"
                    f"{', ERROR ' + result['error'] if 'error' in result else ''}",
                    flush=True,
                )
                # Only the recent media is kept: a 20-minute call's frames and audio are large.
                keep_from = time.monotonic() - 5.0
                call.peer.video[:] = [r for r in call.peer.video if r[0] >= keep_from]
                call.peer.audio[:] = [r for r in call.peer.audio if r[0] >= keep_from]
                k += 1
            final = await call.finish()
            log_path = platform.log_dir / "api.log"  # read before the run folder goes
            if log_path.exists():
                api_log = [
                    line[:300]
                    for line in log_path.read_text(errors="replace").splitlines()
                    if TROUBLE.search(line)
                ]
    finally:
        logging.getLogger().removeHandler(trouble)
    meta = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "replica": str(stack.replica_dir),
        "cores": os.cpu_count(),
        "minutes": args.minutes,
        "every_s": args.every,
        "stream_height": settings.stream_height,
        "llm_model": endpoints.get("llm_model", ""),
    }
    return {
        "meta": meta,
        "turns": turns,
        "memory": mem,
        "states": states,
        "client_trouble": trouble.records,
        "api_log_trouble": api_log,
        "server_turns": final.get("server_turns"),
    }


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    turns = data["turns"]
    answered = [t for t in turns if t.get("to_first_audio_s") is not None and "error" not in t]
    third = max(1, len(turns) // 3)
    first, last = turns[:third], turns[-third:]

    def lat(rows: list[dict[str, Any]]) -> list[float]:
        return [float(t["to_first_audio_s"]) for t in rows if t.get("to_first_audio_s") is not None]

    mem = data["memory"]
    growth = {}
    if len(mem) >= 2:
        for name in SERVING:
            if name in mem[0] and name in mem[-1]:
                growth[name] = round(mem[-1][name] - mem[0][name], 1)
    # The client's own hang-up after the last turn closes the connection: not trouble.
    hung_up = turns[-1]["at_s"] + data["meta"]["every_s"] if turns else 0.0
    failed_states = [
        s for t, s in data["states"] if s in ("failed", "disconnected", "closed") and t < hung_up
    ]
    return {
        "turns": len(turns),
        "answered": len(answered),
        "first_audio_p50_s": {"first third": pct(lat(first), 50), "last third": pct(lat(last), 50)},
        "first_audio_p95_s": {"first third": pct(lat(first), 95), "last third": pct(lat(last), 95)},
        "fps_median": {
            "first third": pct([t["fps"] for t in first], 50),
            "last third": pct([t["fps"] for t in last], 50),
        },
        "fps_min": min((t["fps"] for t in turns), default=None),
        "gap_max_ms": max((t["gap_max_ms"] for t in turns), default=None),
        "memory_mb": [mem[0], mem[-1]] if mem else [],
        "memory_growth_mb": growth,
        "memory_growth_total_mb": round(sum(growth.values()), 1) if growth else None,
        "connection_trouble": failed_states,
        "client_trouble": len(data["client_trouble"]),
        "api_log_trouble": len(data["api_log_trouble"]),
    }


def fmt(v: Any, unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def report(data: dict[str, Any], s: dict[str, Any]) -> str:
    m = data["meta"]
    growth = s["memory_growth_total_mb"]
    ok_mem = growth is not None and growth < GOAL_GROWTH_MB
    lines = [
        "# Live call soak",
        "",
        f"Measured {m['measured']} on {m['cores']} CPU cores (no GPU): one call of "
        f"{m['minutes']} minutes, a turn every {m['every_s']} s (real recordings played by an "
        f"aiortc client on loopback), replica `{m['replica']}`, stream height "
        f"{m['stream_height']}, LLM `{m['llm_model']}`. Command: "
        f"`python -m benchmarks.live.soak --minutes {m['minutes']} --every {m['every_s']}`.",
        "",
        "| | first third of the turns | last third |",
        "|---|---|---|",
        f"| end of speech -> first audio, p50 | {fmt(s['first_audio_p50_s']['first third'])} | "
        f"{fmt(s['first_audio_p50_s']['last third'])} |",
        f"| end of speech -> first audio, p95 | {fmt(s['first_audio_p95_s']['first third'])} | "
        f"{fmt(s['first_audio_p95_s']['last third'])} |",
        f"| received fps, median of the turns' windows | "
        f"{fmt(s['fps_median']['first third'], '')} | {fmt(s['fps_median']['last third'], '')} |",
        "",
        f"- Turns answered: **{s['answered']} / {s['turns']}**.",
        f"- Lowest window fps {fmt(s['fps_min'], '')}; largest inter-frame gap "
        f"{fmt(s['gap_max_ms'], ' ms')}.",
        f"- Memory of the serving processes (RSS with their process groups, MB): after the first "
        f"turn {s['memory_mb'][0] if s['memory_mb'] else 'n/a'}, after the last "
        f"{s['memory_mb'][-1] if s['memory_mb'] else 'n/a'} (every turn's in the json): "
        f"growth {s['memory_growth_mb']} = "
        f"**{fmt(growth, ' MB')}** (goal < {GOAL_GROWTH_MB:.0f} MB: "
        f"{'met' if ok_mem else 'not met'}).",
        f"- Peer connection states other than connected: {s['connection_trouble'] or 'none'}; "
        f"aioice/aiortc warnings or errors: client {s['client_trouble']}, API log "
        f"{s['api_log_trouble']}.",
        "- Memory every 10 turns (MB): "
        + "; ".join(
            f"{name} " + " ".join(f"{m.get(name, 0):.0f}" for m in data["memory"][::10])
            for name in SERVING
        )
        + ". A series that climbs turn after turn is a leak; one that rises and falls is a "
        "heap settling.",
        "",
        "## Turn by turn",
        "",
        "| turn | at | recording | first audio | fps | max gap | state |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in data["turns"]:
        lines.append(
            f"| {t['turn']} | {t['at_s']:.0f} s | {t['recording']} | "
            f"{fmt(t.get('to_first_audio_s'))} | {t['fps']:.1f} | {t['gap_max_ms']:.0f} ms | "
            f"{t['state']}{' (' + t['error'] + ')' if 'error' in t else ''} |"
        )
    return "\n".join(lines) + "\n"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", type=Path, help="trained replica folder")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between turns")
    parser.add_argument("--out", default="live_soak", help="results file name, no suffix")
    parser.add_argument(
        "--reanalyse", action="store_true", help="summarise and report the saved json again"
    )
    args = parser.parse_args(argv)
    if args.reanalyse:
        data = json.loads((RESULTS / f"{args.out}.json").read_text())
    else:
        data = await soak(args)
    s = summarise(data)
    data["summary"] = s
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    text = report(data, s)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    return 0 if s["answered"] == s["turns"] else 1


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the soak: its platform is stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    raise SystemExit(asyncio.run(main()))
