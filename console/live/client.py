"""One live socket as the hub keeps it: its user and token, its outgoing queue (bounded in frames
and bytes), its rate-limit bucket and the commands it is waiting on. Its writer is the hub's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from websockets.asyncio.server import ServerConnection

from console.auth import User
from console.live.protocol import LiveLimits
from console.ratelimit import TokenBucket


class Client:
    """One socket: its user and token, its outgoing queue (bounded in frames and bytes), its
    rate-limit bucket and the commands it is waiting on."""

    def __init__(
        self, ws: ServerConnection, user: User, token: str, limits: LiveLimits, origin: str | None = None
    ) -> None:
        self.ws = ws
        self.user = user
        self.token = token
        self.origin = origin  # the client's address (console.addresses), for the audit log
        self._limits = limits
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.queued_bytes = 0
        self.closed = False  # being cut off: no more frames in or out
        self.sender: asyncio.Task[None] | None = None
        self.pending: set[str] = set()  # command ids awaiting the dispatcher
        self.last_snapshot = -float("inf")  # when this client last asked for a snapshot
        self._bucket = TokenBucket(limits.rate_per_s, float(limits.rate_burst))
        self._strikes = 0.0
        self._stamp = time.monotonic()

    @property
    def queued(self) -> int:
        return len(self._frames)

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; False if the client is too far behind (nothing was queued)."""
        if self.closed:
            return True
        if self._frames and (
            len(self._frames) >= self._limits.queue_frames
            or self.queued_bytes + len(frame) > self._limits.queue_bytes
        ):
            return False
        self._frames.append(frame)
        self.queued_bytes += len(frame)
        self._ready.set()
        return True

    async def next_frame(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.queued_bytes -= len(frame)
        return frame

    def drop_queue(self) -> None:
        self._frames.clear()
        self.queued_bytes = 0

    def take_token(self, now: float | None = None) -> bool:
        """Token bucket (console.ratelimit): True if this frame is within the rate; a refusal
        counts as a strike, and strikes fade at one a second."""
        now = time.monotonic() if now is None else now
        elapsed, self._stamp = max(0.0, now - self._stamp), now
        self._strikes = max(0.0, self._strikes - elapsed)
        if self._bucket.take(now):
            return True
        self._strikes += 1.0
        return False

    @property
    def abusive(self) -> bool:
        return self._strikes > self._limits.strikes
