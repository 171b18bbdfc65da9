"""URL safety for every URL a client gives Doppel to reach (`callback_url` now; later
`train_video_url`, `audio_url`): http(s) only, and the host must resolve to public addresses
only. Loopback, private, link-local (the cloud metadata service at 169.254.169.254),
multicast, reserved and unspecified addresses, IPv4 and IPv6, are refused with a message naming
the reason, unless the operator set `Settings.allow_private_urls`.

IP literals are judged as written; host names are resolved and every address they give must be
public. Callers that fetch should check again right before connecting (DNS can change).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from doppel.errors import InvalidRequest

MAX_URL = 2048
SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not be reached from Doppel, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return refusal(mapped)
    # Order matters: 127.0.0.1 and 240.0.0.1 are also "private" in Python's tables; the
    # sharper reason is named.
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    if not address.is_global:
        return "not globally routable"
    return None


def _parse(url: str, field: str) -> tuple[str, int]:
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"`{field}` is empty: send an http(s) URL.")
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidRequest(f"`{field}` is {len(url)} characters long; at most {MAX_URL}.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"`{field}` is not a valid URL: {exc}.") from exc
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidRequest(
            f"`{field}` must be an http or https URL; {parts.scheme or 'no'} scheme given."
        )
    host = parts.hostname
    if not host:
        raise InvalidRequest(f"`{field}` has no host name.")
    return host, port or (443 if parts.scheme.lower() == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` names: an IP literal as itself (no lookup), a name through DNS."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        out.append(ipaddress.ip_address(raw))
    return out


async def check_url(url: str, *, allow_private: bool = False, field: str = "url") -> str:
    """`url` stripped, when Doppel may reach it; `InvalidRequest` (a 422) naming the reason
    otherwise.
    """
    host, port = _parse(url, field)
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise InvalidRequest(f"`{field}`: the host {host!r} cannot be resolved ({exc}).") from exc
    if not addresses:
        raise InvalidRequest(f"`{field}`: the host {host!r} has no address.")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                raise InvalidRequest(
                    f"`{field}` points at {address}, a {reason} address; Doppel only reaches "
                    "public addresses (the operator can allow others with "
                    "DOPPEL_ALLOW_PRIVATE_URLS=1)."
                )
    return url.strip()
