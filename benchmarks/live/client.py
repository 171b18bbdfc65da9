"""The far end of a live call, for tests and the live benchmark: an aiortc client peer on
loopback that records what arrives (video, audio and data-channel events, with arrival times
and the RTCP sender reports that map each track's RTP time to the sender's wall clock), and a
microphone track that plays a real recording in real time (then silence), logging when each
of its 20 ms frames was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket
from av import AudioFrame, VideoFrame

from doppel.face import mouth
from doppel.live.webrtc import new_peer, set_local
from doppel.replica.artefact import Replica

Rows = list[tuple[float, int, np.ndarray]]  # (arrival, pts, data)


def rgb(frame: VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def sender_wall(reports: list[tuple[int, int]], rate: int) -> Callable[[int], float] | None:
    """RTP timestamp -> the sender's wall time, from a track's sender reports (each: the wall
    time it was sent and the last RTP timestamp sent; the lowest difference is the report
    sent as a packet left), as a browser maps them to lip-sync.
    """
    if not reports:
        return None
    ref = reports[0][1]

    def since_ref(rtp: int) -> int:
        d = (rtp - ref) % 2**32
        return d - 2**32 if d >= 2**31 else d

    c = min(ntp / 2**32 - since_ref(rtp) / rate for ntp, rtp in reports)
    return lambda rtp: c + since_ref(rtp) / rate


def lip_synced(peer: Client, t0: float, t1: float) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The video frames that arrived in [t0, t1] and the audio the sender sent with them
    (48 kHz mono, one 1920-sample stretch a frame), placed by the sender reports as a browser
    lip-syncs, not by arrival (a busy receiver delays either track); None without reports.
    Frames missing from the run repeat the last one; audio missing is silence.
    """
    vt, at = peer.sender_time("video"), peer.sender_time("audio")
    rows = [(vt(p), f) for t, p, f in peer.video if t0 <= t <= t1] if vt is not None else []
    if not rows or at is None:
        return None
    w0 = rows[0][0]
    count = int(round((rows[-1][0] - w0) * 25)) + 1
    frames: list[np.ndarray | None] = [None] * count
    for w, f in rows:
        frames[min(count - 1, max(0, int(round((w - w0) * 25))))] = f
    for i in range(count):
        if frames[i] is None:
            frames[i] = frames[i - 1] if i else rows[0][1]
    audio = np.zeros(count * 1920, np.float32)
    for _, p, a in peer.audio:
        at0 = int(round((at(p) - w0) * 48000))
        lo, hi = max(0, at0), min(len(audio), at0 + len(a))
        if lo < hi:
            audio[lo:hi] = a[lo - at0 : hi - at0]
    return [f for f in frames if f is not None], audio


class Client:
    """The far end: an aiortc peer on loopback recording what arrives, with arrival times.

    `keep(frame)`: what is kept of each received video frame (default: all of it, RGB).
    """

    def __init__(
        self,
        mic: MediaStreamTrack | None = None,
        keep: Callable[[VideoFrame], np.ndarray] = rgb,
    ) -> None:
        self.pc: RTCPeerConnection = new_peer()
        self.keep = keep
        self.video: Rows = []  # (arrival, pts, kept frame)
        self.audio: Rows = []  # (arrival, pts, float mono)
        self.rates: set[int] = set()
        self.messages: asyncio.Queue[object] = asyncio.Queue()
        self.arrivals: list[tuple[float, object]] = []  # every message, with its arrival
        self.seen: list[tuple[str, object]] = []  # the events `event` read, in order
        #: Each track's RTCP sender reports: (NTP time, RTP timestamp) as sent.
        self.reports: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
        #: RTP packets as they arrive, before the jitter buffers: (arrival, RTP timestamp), every
        #: audio packet and each video frame's last (marker) packet.
        self.packets: dict[str, list[tuple[float, int]]] = {"audio": [], "video": []}
        self.channel = self.pc.createDataChannel("events")
        self.channel.on("message", self._message)
        self.pc.addTransceiver("video", direction="recvonly")
        if mic is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:  # the person's microphone: sent, and the replica's voice received
            self.pc.addTrack(mic)
        for transceiver in self.pc.getTransceivers():
            self._watch(transceiver.receiver, transceiver.kind)
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._track)

    def interact(self, cid: str, event_type: str, properties: dict[str, Any]) -> None:
        """Send an inbound interaction on the data channel, in Tavus's envelope."""
        message = {
            "message_type": "conversation",
            "event_type": event_type,
            "conversation_id": cid,
            "properties": properties,
        }
        self.channel.send(json.dumps(message))

    def _message(self, text: str) -> None:
        got = json.loads(text)
        self.arrivals.append((time.monotonic(), got))
        self.messages.put_nowait(got)

    def arrival(self, message: object) -> float:
        """When `message` (one the queue gave) arrived."""
        return next(t for t, m in self.arrivals if m is message)

    def _watch(self, receiver: RTCRtpReceiver, kind: str) -> None:
        """Record the sender reports reaching `receiver` (aiortc keeps only the last one) and
        its packets' arrival (aiortc keeps none).
        """
        handle_rtcp, handle_rtp = receiver._handle_rtcp_packet, receiver._handle_rtp_packet
        reports, packets = self.reports[kind], self.packets[kind]

        async def rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                reports.append((info.ntp_timestamp, info.rtp_timestamp))
            await handle_rtcp(packet)

        async def rtp(packet: Any, arrival_time_ms: int) -> None:
            if kind == "audio" or packet.marker:
                packets.append((time.monotonic(), packet.timestamp))
            await handle_rtp(packet, arrival_time_ms)

        receiver._handle_rtcp_packet = rtcp  # type: ignore[method-assign]
        receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]

    def rtp_origin(self, kind: str) -> int | None:
        """The RTP timestamp aiortc maps to pts 0 for `kind` (its first frame's)."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == kind:
                mapper = transceiver.receiver._RTCRtpReceiver__timestamp_mapper  # type: ignore[attr-defined]
                return mapper._origin  # type: ignore[no-any-return]
        return None

    def sender_time(self, kind: str) -> Callable[[int], float] | None:
        """pts of a received `kind` frame -> the sender's wall time of that instant (its sender
        reports); None before a report arrived.
        """
        rate = 90000 if kind == "video" else 48000
        wall, origin = sender_wall(self.reports[kind], rate), self.rtp_origin(kind)
        if wall is None or origin is None:
            return None
        return lambda pts: wall((pts + origin) % 2**32)

    def _track(self, track: object) -> None:
        self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: object) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()  # type: ignore[attr-defined]
                now = time.monotonic()
                if track.kind == "video":  # type: ignore[attr-defined]
                    self.video.append((now, frame.pts, self.keep(frame)))
                else:
                    pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                    channels = len(frame.layout.channels)
                    self.audio.append((now, frame.pts, pcm.reshape(-1, channels).mean(axis=1)))
                    self.rates.add(frame.sample_rate)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


class Mic(MediaStreamTrack):
    """The person's microphone: a real recording at 48 kHz in real time, then silence.

    `sent`: (wall time, first sample) of each 20 ms frame as it was handed to the peer.
    """

    kind = "audio"
    STEP = 960  # 20 ms

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self.samples = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        self.pos = 0
        self.start: float | None = None
        self.sent: list[tuple[float, int]] = []

    def say(self, samples: np.ndarray) -> int:
        """Speak `samples` (48 kHz) from now on, over whatever was left; returns the position
        (in samples sent since the start) of their first sample.
        """
        head = self.samples[: self.pos]
        head = np.pad(head, (0, self.pos - len(head)))  # silence was sent past the old end
        self.samples = np.concatenate([head, (np.clip(samples, -1, 1) * 32767).astype(np.int16)])
        return self.pos

    def sent_at(self, position: int) -> float | None:
        """When the frame holding sample `position` was sent (None: not yet)."""
        for at, pos in reversed(self.sent):
            if pos <= position < pos + self.STEP:
                return at
            if pos + self.STEP <= position:
                return None
        return None

    async def recv(self) -> Any:
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pos / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.samples[self.pos : self.pos + self.STEP]
        chunk = np.pad(chunk, (0, self.STEP - len(chunk)))
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.pos, Fraction(1, 48000)
        self.sent.append((time.monotonic(), self.pos))
        self.pos += self.STEP
        return frame


async def join(
    http: Any,
    cid: str,
    mic: MediaStreamTrack | None = None,
    *,
    headers: dict[str, str] | None = None,
    keep: Callable[[VideoFrame], np.ndarray] = rgb,
) -> Client:
    """The client peer's offer through the API (`http`: an httpx or Litestar test client),
    answered; every candidate on loopback.
    """
    peer = Client(mic, keep)
    offer = await set_local(peer.pc, loopback=True)
    answered = await http.post(
        f"/v2/conversations/{cid}/offer",
        json={"sdp": offer.sdp, "type": offer.type},
        headers=headers,
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["type"] == "answer" and body["pc_id"]
    candidates = [x for x in body["sdp"].splitlines() if x.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates), candidates
    await peer.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
    return peer


async def event(peer: Client, event_type: str, timeout_s: float) -> dict[str, Any]:
    """The next data-channel event of `event_type` (earlier ones of other types skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            got = await asyncio.wait_for(peer.messages.get(), max(0.0, left))
        except TimeoutError:
            raise AssertionError(f"no {event_type} within {timeout_s} s; {peer.seen}") from None
        assert isinstance(got, dict)
        peer.seen.append((got["event_type"], got.get("properties")))
        if got["event_type"] == event_type:
            return got


async def until(done: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll `done` (media state has no event to wait on) until true, or fail saying `what`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        await asyncio.sleep(0.02)


def since(rows: Rows, t0: float, t1: float = np.inf) -> Rows:
    return [r for r in rows if t0 <= r[0] < t1]


def rms(rows: Rows) -> float:
    if not rows:
        return 0.0
    return rms_of(np.concatenate([a for _, _, a in rows]))


def rms_of(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def mouth_box(replica: Replica, size: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the streamed frames (`size`: width, height) holding the mouth in
    the listening stretch.
    """
    prepared = replica.prepared
    a, b = replica.idle_range or replica.base_range
    pts = prepared.landmarks[a:b][:, list(mouth.POINTS)]
    sx, sy = size[0] / prepared.width, size[1] / prepared.height
    x0, y0 = pts.min(axis=(0, 1)) * (sx, sy)
    x1, y1 = pts.max(axis=(0, 1)) * (sx, sy)
    return slice(int(y0), int(y1) + 1), slice(int(x0), int(x1) + 1)
