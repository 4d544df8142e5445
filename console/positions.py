"""Responders' live positions pushed to operators' consoles (docs/live-protocol.md, "Positions").

Polling every responder's position made a move up to 5 s late on the map. Instead each console
server reads `positions.raw` itself (no consumer group, every partition, from the end, like its
event feed), keeps the newest fix of each responder that moved, and every `POSITION_PUSH_MS`
sends those as one frame: encoded once, the same bytes handed to every console
(`LiveHub.push_positions`). A flush costs O(moved responders) to encode plus one queue append
per console, never consoles × responders.

Positions are ephemeral: the frames carry no `seq`, are not kept for resume, and a console that
(re)connects reads current positions from `GET /api/v1/responders/live`. A record the streams
worker refuses (and dead-letters) is skipped here with a count and a debug line: one letter is
enough.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import orjson
from aiokafka import AIOKafkaConsumer

from contracts import topics
from contracts.timewindow import HARD, TimeWindow
from contracts.validation import BadRecord
from infra.fixes import read_fixes
from infra.kafka import RestartedLogCheck, start_at_end
from infra.settings import Settings

log = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PER_FRAME: Final = 5_000  # more moved responders in one flush go out as several frames
MAX_TRACKED: Final = 200_000  # responders whose newest `at` is remembered (least recently moved go first)

# One moved responder in a frame: [responder_id, lon, lat, at as epoch milliseconds].
Entry = list[Any]


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (integer arithmetic, no float rounding), so a
    sender can match the fix it sent by (responder_id, at)."""
    return (at - EPOCH) // timedelta(milliseconds=1)


class Coalescer:
    """The newest fix of each responder that moved since the last `take`. A fix not newer than
    one already seen for that responder (pending or already sent) is refused, so a late or
    repeated record never moves a marker back."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._newest: dict[str, int] = {}  # responder id -> newest `at` seen, in microseconds
        self._moved: dict[str, Entry] = {}
        self._max_tracked = max_tracked

    def add(self, responder_id: str, lon: float, lat: float, at: datetime) -> bool:
        """Keep this fix if it is the responder's newest; False if it was refused as stale."""
        at_us = (at - EPOCH) // timedelta(microseconds=1)
        newest = self._newest.get(responder_id)
        if newest is not None:
            if at_us <= newest:
                return False
            del self._newest[responder_id]  # re-inserted last: the most recently moved
        elif len(self._newest) >= self._max_tracked:
            del self._newest[next(iter(self._newest))]
        self._newest[responder_id] = at_us
        self._moved[responder_id] = [responder_id, lon, lat, at_us // 1000]
        return True

    @property
    def pending(self) -> int:
        return len(self._moved)

    def take(self) -> list[Entry]:
        """The moved responders since the last call, each once, with its newest fix."""
        moved = list(self._moved.values())
        self._moved = {}
        return moved


def positions_frames(moved: list[Entry], per_frame: int = MAX_PER_FRAME) -> list[bytes]:
    """`{"type": "positions", "positions": [[id, lon, lat, at_ms], ...]}`, at most `per_frame`
    entries each."""
    return [
        orjson.dumps({"type": "positions", "positions": moved[i : i + per_frame]})
        for i in range(0, len(moved), per_frame)
    ]


class Consoles(Protocol):
    """Where frames go: LiveHub."""

    @property
    def console_count(self) -> int: ...

    def push_positions(self, frame: bytes) -> int: ...


@dataclass(slots=True)
class FeedStats:
    fixes: int = 0  # records kept as a responder's newest fix
    stale: int = 0  # records not newer than what was already seen for that responder
    invalid: int = 0  # records refused (the streams worker dead-letters them)
    frames: int = 0  # frames encoded
    sent: int = 0  # frames taken by consoles
    skipped: int = 0  # frames a console skipped, being too far behind (LiveHub.push_positions)


class PositionFeed:
    """Takes `positions.raw` records, coalesces them and flushes the moves to the consoles every
    `push_ms`. Owned by the composition root, which runs `run` as a task and stops it with the
    `stopping` event (or by cancelling the task)."""

    def __init__(
        self,
        consoles: Consoles,
        push_ms: int,
        max_tracked: int = MAX_TRACKED,
        window: TimeWindow = HARD,
    ) -> None:
        self._consoles = consoles
        self._window = window
        self.period_s = max(1, push_ms) / 1000
        self._coalescer = Coalescer(max_tracked)
        self.stats = FeedStats()

    def take(self, key: bytes | None, value: bytes | None) -> int:
        """One record (one fix or a batch, see infra.fixes): how many of its fixes are now
        their responder's pending newest."""
        now = datetime.now(UTC)
        try:
            fixes, bad = read_fixes(key, value, now, self._window)
        except BadRecord as exc:
            self.stats.invalid += 1
            log.debug("position record skipped: %s", exc)
            return 0
        self.stats.invalid += len(bad)
        kept = 0
        for fix in fixes:
            # never newer than now: a fix dated ahead would hide the responder's real moves
            if self._coalescer.add(fix.responder_id, fix.lon, fix.lat, min(fix.at, now)):
                kept += 1
            else:
                self.stats.stale += 1
        self.stats.fixes += kept
        return kept

    def flush(self) -> int:
        """Send the moved responders to every console; returns the frames encoded. With no
        console connected nothing is encoded (a console that connects reads positions over HTTP)."""
        moved = self._coalescer.take()
        if not moved:
            return 0
        consoles = self._consoles.console_count
        if consoles == 0:
            return 0
        frames = positions_frames(moved)
        for frame in frames:
            took = self._consoles.push_positions(frame)
            self.stats.sent += took
            self.stats.skipped += consoles - took
        self.stats.frames += len(frames)
        return len(frames)

    async def run(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Read records as they come and flush every period, until `stopping`; logs restarted by
        the broker are read again from their start (RestartedLogCheck)."""
        check_logs = RestartedLogCheck(consumer)
        due = time.monotonic() + self.period_s
        try:
            while not stopping.is_set():
                wait_ms = max(0, round((due - time.monotonic()) * 1000))
                batches = await consumer.getmany(timeout_ms=wait_ms)
                for records in batches.values():
                    for record in records:
                        self.take(record.key, record.value)
                now = time.monotonic()
                if now >= due:
                    self.flush()
                    due += self.period_s
                    if due <= now:  # fell behind: the next flush one period from now
                        due = now + self.period_s
                await check_logs()
        finally:
            log.info("position feed stopped: %s", self.stats)


async def start_positions_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Every partition of `positions.raw`, from its end: moves from now on."""
    return await start_at_end(settings, topics.POSITIONS_RAW)
