"""WebRTC for a live call (aiortc): the replica's video and audio tracks read one `MediaClock`,
an offer is answered whole (non-trickle: the answer waits for ICE gathering), and a data channel
carries the call's events as JSON.

ICE: STUN/TURN servers come from settings (none by default: a peer on the same host or LAN needs
none). aioice leaves 127.0.0.1 out of its host candidates; tests and local mode gather on
loopback only (`loopback_gathering`), so every packet stays on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import uuid
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import aioice.ice
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.sdp import SessionDescription
from av import AudioFrame, VideoFrame

from doppel.errors import Malformed
from doppel.live.clock import AUDIO_RATE, SLOT_RATE, MediaClock
from doppel.settings import Settings

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
#: Label of the events channel a client opens in its offer.
EVENTS = "events"

_loopback: contextvars.ContextVar[bool] = contextvars.ContextVar("loopback", default=False)
_host_addresses = aioice.ice.get_host_addresses


def _addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Aioice's host addresses, or 127.0.0.1 alone inside `loopback_gathering`."""
    if _loopback.get():
        return ["127.0.0.1"] if use_ipv4 else []
    return _host_addresses(use_ipv4, use_ipv6)


@contextlib.contextmanager
def loopback_gathering(on: bool = True) -> Iterator[None]:
    """Within this block (this task and the tasks it starts), ICE gathers only 127.0.0.1.

    aioice reads its host addresses through one module function; it is wrapped once, and the
    wrapper answers loopback only where this context variable is set, so other peers in the
    process gather as usual.
    """
    aioice.ice.get_host_addresses = _addresses
    token = _loopback.set(on)
    try:
        yield
    finally:
        _loopback.reset(token)


def new_peer(ice_servers: Sequence[str] = ()) -> RTCPeerConnection:
    """A peer connection with these STUN/TURN URLs (never aiortc's default public STUN)."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
    )


async def set_local(pc: RTCPeerConnection, *, loopback: bool) -> RTCSessionDescription:
    """Make and set the local description, waiting for ICE gathering (its candidates in it)."""
    with loopback_gathering(loopback):
        if pc.signalingState == "have-remote-offer":
            await pc.setLocalDescription(await pc.createAnswer())
        else:
            await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription


class VideoTrack(MediaStreamTrack):
    """The replica's video: slot i's frame, pts i * 3600 at 90 kHz."""

    kind = "video"

    def __init__(self, clock: MediaClock) -> None:
        super().__init__()
        self.clock = clock
        self._index: int | None = None

    async def recv(self) -> VideoFrame:
        index = self.clock.now() if self._index is None else self._index
        self._index = index + 1
        slot = await self.clock.slot(index)
        frame = VideoFrame.from_ndarray(slot.frame, format="rgb24")
        frame.pts = index * (VIDEO_CLOCK // SLOT_RATE)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class AudioTrack(MediaStreamTrack):
    """The replica's voice: slot i's 40 ms, s16 mono at 48 kHz, as two 20 ms frames (pts
    i * 1920 and i * 1920 + 960): aiortc's Opus encoder stamps each RTP packet with its
    input frame's time, so a 40 ms frame would send two 20 ms packets under one timestamp.
    """

    kind = "audio"

    def __init__(self, clock: MediaClock) -> None:
        super().__init__()
        self.clock = clock
        self._index: int | None = None
        self._second: AudioFrame | None = None

    async def recv(self) -> AudioFrame:
        if self._second is not None:
            frame, self._second = self._second, None
            return frame
        index = self.clock.now() if self._index is None else self._index
        self._index = index + 1
        slot = await self.clock.slot(index)
        half = len(slot.audio) // 2
        first = _audio_frame(slot.audio[:half], index * len(slot.audio))
        self._second = _audio_frame(slot.audio[half:], index * len(slot.audio) + half)
        return first


def _audio_frame(pcm: np.ndarray, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, :]), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = AUDIO_TIME_BASE
    return frame


def parse_offer(sdp: str, kind: str) -> SessionDescription:
    """The offer, or `Malformed` saying what is wrong with it."""
    if kind != "offer":
        raise Malformed(f"type must be 'offer' (got {kind!r}): send the browser's offer.")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises anything on garbage
        raise Malformed(f"The SDP offer could not be read ({exc!r}).") from exc
    if not parsed.media:
        raise Malformed("The SDP offer has no media section (no audio, video or data).")
    if any(m.dtls is None or not m.dtls.fingerprints for m in parsed.media):
        raise Malformed(
            "The SDP offer has no DTLS fingerprint and role (a=fingerprint, a=setup): WebRTC "
            "media is encrypted; send the offer the browser made."
        )
    return parsed


#: What aiortc raises on an offer it cannot take (no common codec, no rtcp-mux, ...).
_AIORTC_ERRORS = (InternalError, InvalidAccessError, InvalidStateError, OperationError)


class Call:
    """One peer of a live call: the replica's tracks on `clock`, and the events channel.

    `loopback`: gather 127.0.0.1 only (tests, local mode). Messages the client sends on the
    channel arrive, decoded, in `received`.
    """

    def __init__(
        self, clock: MediaClock, *, ice_servers: Sequence[str] = (), loopback: bool = False
    ) -> None:
        self.id = uuid.uuid4().hex
        self.clock = clock
        self.loopback = loopback
        self.pc = new_peer(ice_servers)
        self.channel: RTCDataChannel | None = None
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self._outbox: list[str] = []
        self.pc.on("datachannel", self._channel)

    @classmethod
    def configured(cls, clock: MediaClock, settings: Settings, *, loopback: bool = False) -> Call:
        """A call peer with the ICE servers of `settings` (DOPPEL_ICE_SERVERS)."""
        return cls(clock, ice_servers=settings.ice_servers, loopback=loopback)

    async def answer(self, offer_sdp: str, type: str) -> tuple[str, str, str]:  # noqa: A002
        """Answer the client's offer: (sdp, type, call id). The answer holds our candidates."""
        parsed = parse_offer(offer_sdp, type)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, type))
        except (ValueError, KeyError, IndexError, TypeError, *_AIORTC_ERRORS) as exc:
            raise Malformed(f"The SDP offer cannot be answered ({exc}).") from exc
        kinds = {m.kind for m in parsed.media}
        if "video" in kinds:
            self.pc.addTrack(VideoTrack(self.clock))
        if "audio" in kinds:
            self.pc.addTrack(AudioTrack(self.clock))
        local = await set_local(self.pc, loopback=self.loopback)
        return local.sdp, local.type, self.id

    def send(self, message: Any) -> None:
        """Send `message` as JSON on the events channel (held until it opens)."""
        text = json.dumps(message)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        else:
            self._outbox.append(text)

    def _channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("message")
        def on_message(text: str | bytes) -> None:
            with contextlib.suppress(ValueError):
                self.received.put_nowait(json.loads(text))

        def flush() -> None:
            for text in self._outbox:
                channel.send(text)
            self._outbox.clear()

        if channel.readyState == "open":
            flush()
        else:
            channel.on("open", flush)

    async def close(self) -> None:
        await self.pc.close()
