"""Slow clients against a real live server: a console that stops reading is cut off within a
bounded time, the server's memory for it stays bounded, and a healthy console beside it gets
every delta, in order and promptly."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from typing import Any

import asyncpg
import orjson
from websockets.exceptions import ConnectionClosed

from console.board import Board
from console.live import CLOSE_TOO_SLOW
from tests.console.live.harness import Centre, Peer, live_centre


class Counter:
    """Reads a healthy console's deltas as they come, keeping only the count and the last seq."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.count = 0
        self.seq = peer.seq or 0
        self.gaps = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.peer.ws:
                frame = orjson.loads(raw)
                if frame["type"] == "delta":
                    if frame["seq"] != self.seq + 1:
                        self.gaps += 1
                    self.seq = frame["seq"]
                    self.count += 1
        except ConnectionClosed:
            pass

    async def until(self, seq: int, timeout: float) -> float:
        """Seconds until the console had applied `seq`."""
        started = time.monotonic()
        while self.seq < seq:
            assert time.monotonic() - started < timeout, f"healthy console at {self.seq}, not {seq}"
            await asyncio.sleep(0.01)
        return time.monotonic() - started


async def publish_many(centre: Centre, n: int, pad: int, batch: int = 50) -> tuple[int, int]:
    """Publish n deltas of about `pad` bytes each, letting the loop run between batches; returns
    the last seq and the most bytes any client's queue held meanwhile."""
    most = 0
    seq = 0
    for start in range(0, n, batch):
        for _ in range(min(batch, n - start)):
            # Random text: permessage-deflate would shrink repeated text to nothing.
            seq = centre.publish(description="油烟" + os.urandom(pad // 2).hex())
        most = max([most, *(c.queued_bytes for c in centre.hub.connected())])
        await asyncio.sleep(0.002)
    return seq, most


async def test_a_console_that_stops_reading_is_cut_off_and_memory_stays_bounded(pg: asyncpg.Pool) -> None:
    limits: dict[str, Any] = {
        "queue_frames": 300,
        "queue_bytes": 2 * 2**20,
        "send_timeout_s": 5.0,
        "close_timeout_s": 1.0,
    }
    async with live_centre(pg, board=Board(history=50), **limits) as centre:
        healthy = Counter(await centre.open("viewer"))
        slow = await centre.open("operator", rcvbuf=4096)
        slow.ws.transport.pause_reading()  # the console stops reading; TCP fills up behind it
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            started = time.monotonic()
            # ~16 MB in all: loopback TCP alone buffers a few MB for a peer that reads nothing.
            last, most = await publish_many(centre, 2000, pad=8000, batch=10)
            took = await healthy.until(last, timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert healthy.count == 2000 and healthy.gaps == 0
        assert took < 5.0, f"the healthy console lagged {took:.1f}s behind the last delta"
        assert most <= 2 * 2**20  # the per-client queue bound
        grown = (peak - base) / 2**20
        assert grown < 10, f"{grown:.1f} MiB grew while 16 MB went out to a console that reads nothing"
        # The slow one was cut off, well before the end.
        while centre.hub.client_count > 1:
            assert time.monotonic() - started < 15, "the slow console is still served"
            await asyncio.sleep(0.05)
        slow.ws.transport.resume_reading()
        code, _ = await slow.closed_with(10)
        assert code in (CLOSE_TOO_SLOW, None)  # 4408, or aborted when it would not take the close
        healthy.task.cancel()
        await healthy.peer.close()


async def test_a_send_stuck_on_a_peer_that_reads_nothing_is_bounded(pg: asyncpg.Pool) -> None:
    """The queue never fills (it may hold 16 MiB here), yet the frame the peer does not take
    cuts it off after `send_timeout_s`, and the close does not wait on it forever either."""
    limits: dict[str, Any] = {"send_timeout_s": 1.0, "close_timeout_s": 1.0}
    async with live_centre(pg, board=Board(history=100), **limits) as centre:
        healthy = Counter(await centre.open("viewer"))
        stuck = await centre.open("operator", rcvbuf=4096)
        stuck.ws.transport.pause_reading()
        last, _ = await publish_many(centre, 1000, pad=8000, batch=20)  # ~8 MB: past every buffer
        published = time.monotonic()
        await healthy.until(last, timeout=15)
        while centre.hub.client_count > 1:
            assert time.monotonic() - published < 6, "the stuck console is still served"
            await asyncio.sleep(0.05)
        assert healthy.gaps == 0
        healthy.task.cancel()
        await healthy.peer.close()
        stuck.ws.transport.resume_reading()
        code, _ = await stuck.closed_with(10)
        assert code in (CLOSE_TOO_SLOW, None)
