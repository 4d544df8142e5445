"""Who is calling, by network address: the peer, or behind a trusted proxy the client it names.

One rule for every entry point (HTTP requests, WebSocket handshakes), so the address a throttle
keys on and the audit log records is the same everywhere, and only a configured proxy
(TRUSTED_PROXIES) is believed when it says whom it forwards for. uvicorn's own proxy-header
handling is off (console.main): it trusted loopback by default, before this rule ran, so anyone on
the machine could name any address.
"""

from __future__ import annotations

import ipaddress

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def trusted_networks(setting: str) -> Networks:
    """TRUSTED_PROXIES: addresses or CIDR ranges, comma-separated (e.g. the load balancer's subnet)."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in setting.split(",") if p.strip())


def _trusted(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Networks) -> str | None:
    """The peer, or behind a trusted proxy the last X-Forwarded-For hop that is not itself a
    trusted proxy. A peer that is not a trusted proxy cannot name another address."""
    if peer is None or not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop[:64]
    return peer


__all__ = ["Networks", "client_address", "trusted_networks"]
