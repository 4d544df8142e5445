"""Who is calling, by address: only a configured proxy may name another client, at every layer
(the pure rule here and the WebSocket server's commands; uvicorn as console.main serves the app
in test_access.py)."""

from __future__ import annotations

import ipaddress

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.addresses import client_address, trusted_networks
from tests.console.live.harness import live_centre

LB = trusted_networks("10.200.0.0/16, 192.0.2.1")
addresses = st.ip_addresses(v=4).map(str)


def test_a_trusted_proxy_names_the_client_it_saw_and_nobody_else_can() -> None:
    assert client_address("10.200.0.5", "6.6.6.6, 203.0.113.7, 10.200.3.3", LB) == "203.0.113.7"
    assert client_address("10.200.0.5", None, LB) == "10.200.0.5"  # the proxy itself
    assert client_address("198.51.100.9", "192.0.2.1", LB) == "198.51.100.9"
    assert client_address("127.0.0.1", "10.0.0.1", trusted_networks("")) == "127.0.0.1"
    assert client_address(None, "10.0.0.1", LB) is None


@given(addresses, st.lists(addresses, max_size=5))
def test_a_peer_that_is_not_a_trusted_proxy_is_always_itself(peer: str, hops: list[str]) -> None:
    if any(ipaddress.ip_address(peer) in net for net in LB):
        return
    assert client_address(peer, ", ".join(hops), LB) == peer


@pytest.mark.parametrize(("trusted", "expected"), [("", "127.0.0.1"), ("127.0.0.0/8", "10.9.8.7")])
async def test_a_websocket_command_carries_its_senders_address(
    pg: asyncpg.Pool, trusted: str, expected: str
) -> None:
    """Command audit rows said origin null for every WebSocket command."""
    async with live_centre(pg, trusted_proxies=trusted) as centre:
        operator = await centre.open("operator", headers={"X-Forwarded-For": "10.9.8.7"})
        ack = await operator.command("note", incident_id=centre.incident_a, text="回访记录")
        assert ack["type"] == "ack"
        [command] = centre.commands
        assert command["origin"] == expected
        await operator.close()
