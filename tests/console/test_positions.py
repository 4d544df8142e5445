"""The position feed (console/positions.py): coalescing and framing as pure logic; the hub's
fan-out (one frame, the same bytes for every console, none for phones, skipped by a console that
stopped reading); and the whole path on the real broker, PostgreSQL and Redis: a fix posted over
HTTP or sent by a phone reaches operators' consoles as a `positions` frame, never a phone, spends
no `seq`, and an older fix never overwrites a newer one."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from hypothesis import given
from hypothesis import strategies as st

from console.auth import ApiKeys
from console.http import ConsoleServices, create_http_app
from console.intake import IntakeService
from console.live import CONSOLE_ROLES, Client, LiveHub
from console.positions import (
    Coalescer,
    FeedStats,
    PositionFeed,
    epoch_ms,
    positions_frames,
    start_positions_consumer,
)
from console.registry import RegistryService
from contracts import topics
from devtools.seed import DEMO_API_KEYS, api_key_hash
from infra.livestate import LiveState
from infra.settings import Settings
from tests.console.live.harness import Peer, expect_delta, live_centre

T0 = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- pure: coalescing and frames ---------------------------------------------------------------
def test_the_newest_fix_of_each_responder_wins() -> None:
    c = Coalescer()
    assert c.add("P-1", 106.50, 29.60, at(1))
    assert c.add("P-1", 106.53, 29.63, at(3))
    assert not c.add("P-1", 106.52, 29.62, at(2))  # older than the one waiting
    assert c.add("P-2", 106.40, 29.50, at(2))
    assert c.pending == 2
    assert sorted(c.take()) == [
        ["P-1", 106.53, 29.63, epoch_ms(at(3))],
        ["P-2", 106.40, 29.50, epoch_ms(at(2))],
    ]
    assert c.take() == [] and c.pending == 0
    # Already sent: an older or a repeated fix is refused; a newer one moves the responder again.
    assert not c.add("P-1", 106.51, 29.61, at(2.5))
    assert not c.add("P-1", 106.53, 29.63, at(3))
    assert c.add("P-1", 106.54, 29.64, at(3.001))
    assert c.take() == [["P-1", 106.54, 29.64, epoch_ms(at(3.001))]]


@given(
    st.lists(
        st.tuples(st.sampled_from(["P-1", "P-2", "P-3"]), st.integers(0, 40), st.booleans()), max_size=80
    )
)
def test_whatever_the_order_a_responder_never_moves_back(steps: list[tuple[str, int, bool]]) -> None:
    """Fixes in any order, flushed at any points: each flush sends a responder at most once,
    always newer than what was sent before, and in the end its newest fix was sent."""
    c = Coalescer()
    sent: dict[str, int] = {}

    def flush() -> None:
        moved = c.take()
        assert len({rid for rid, *_ in moved}) == len(moved)
        for rid, lon, _lat, ms in moved:
            assert ms > sent.get(rid, -1) and lon == float(ms)
            sent[rid] = ms

    for rid, second, then_flush in steps:
        ms = epoch_ms(at(second))
        c.add(rid, float(ms), 29.6, at(second))
        if then_flush:
            flush()
    flush()
    newest = {rid: max(epoch_ms(at(s)) for r, s, _ in steps if r == rid) for rid, _, _ in steps}
    assert sent == newest


def test_past_its_bound_the_least_recently_moved_responder_is_forgotten() -> None:
    c = Coalescer(max_tracked=2)
    assert c.add("A", 0, 0, at(5)) and c.add("B", 0, 0, at(5)) and c.add("A", 0, 0, at(6))
    assert c.add("C", 0, 0, at(5))  # B, the least recently moved, is forgotten
    c.take()
    assert not c.add("A", 0, 0, at(1))  # still remembered
    assert c.add("B", 0, 0, at(1))  # forgotten: its old fix passes (bounded memory, documented)


def test_epoch_ms_is_exact() -> None:
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    beijing = datetime(2026, 11, 22, 9, 30, 0, 123999, tzinfo=timezone(timedelta(hours=8)))
    assert epoch_ms(beijing) == calendar.timegm((2026, 11, 22, 1, 30, 0)) * 1000 + 123
    base = epoch_ms(T0)
    for ms in range(1000):  # where float seconds * 1000 would slip a millisecond
        assert epoch_ms(T0 + timedelta(milliseconds=ms)) == base + ms


def test_frames_are_compact_and_bounded_in_size() -> None:
    moved: list[list[Any]] = [[f"P-{i}", 106.5 + i / 1000, 29.6, 1_795_000_000_000 + i] for i in range(5)]
    frames = positions_frames(moved, per_frame=2)
    assert [orjson.loads(f) for f in frames] == [
        {"type": "positions", "positions": moved[0:2]},
        {"type": "positions", "positions": moved[2:4]},
        {"type": "positions", "positions": moved[4:5]},
    ]
    assert positions_frames([]) == []


# --- the feed, without a broker ----------------------------------------------------------------
class Consoles:
    """Stands in for the hub: `took` consoles take each frame."""

    def __init__(self, count: int, took: int) -> None:
        self.console_count = count
        self.took = took
        self.frames: list[bytes] = []

    def push_positions(self, frame: bytes) -> int:
        self.frames.append(frame)
        return self.took


def fix(rid: str, seconds: float, lon: float = 106.53, lat: float = 29.63, **extra: Any) -> bytes:
    return orjson.dumps({"responder_id": rid, "lon": lon, "lat": lat, "at": at(seconds).isoformat(), **extra})


def test_unusable_records_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """What the streams worker dead-letters is skipped here, quietly (it is lettered once)."""
    feed = PositionFeed(Consoles(1, 1), 100)
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"P-1", None),
        (b"P-1", b"not json"),
        (b"P-1", b"[1, 2]"),
        (b"P-1", fix("P-1", 1, lat=91)),
        (b"P-1", orjson.dumps({"responder_id": "P-1", "lon": 106.5, "lat": 29.6})),
        (b"P-1", fix("P-1", 1).replace(b"+00:00", b"")),  # a time without its zone
        (b"P-1", fix("P-1", 1, speed=3)),
        (b"P-2", fix("P-1", 1)),  # keyed by someone else
        (None, fix("P-1", 1)),
    ]
    with caplog.at_level(logging.DEBUG, logger="console.positions"):
        for key, value in bad:
            assert not feed.take(key, value)
    assert feed.stats == FeedStats(invalid=len(bad))
    assert feed.flush() == 0
    assert "lat" in caplog.text and "key" in caplog.text
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert feed.take(b"P-1", fix("P-1", 1))


def test_a_batch_record_moves_every_responder_in_it() -> None:
    """The HTTP intake sends a batch per partition; its good fixes move, a bad one is counted."""
    consoles = Consoles(1, 1)
    feed = PositionFeed(consoles, 100)
    batch = [orjson.loads(fix("P-1", 1)), orjson.loads(fix("P-2", 2, lon=106.6)), {"responder_id": "P-3"}]
    assert feed.take(None, orjson.dumps({"positions": batch})) == 2
    assert feed.take(None, orjson.dumps({"positions": batch[:1]})) == 0  # not newer: stale
    assert feed.stats == FeedStats(fixes=2, stale=1, invalid=1)
    assert feed.flush() == 1
    assert [p[0] for p in orjson.loads(consoles.frames[0])["positions"]] == ["P-1", "P-2"]


def test_a_flush_encodes_the_moves_once_for_every_console() -> None:
    consoles = Consoles(3, 2)  # one of three is too far behind and skips it
    feed = PositionFeed(consoles, 100)
    for rid, second in (("P-1", 1), ("P-1", 2), ("P-2", 1), ("P-1", 1.5)):
        feed.take(rid.encode(), fix(rid, second, lon=106.5 + second / 100))
    assert feed.flush() == 1
    [frame] = consoles.frames
    assert orjson.loads(frame) == {
        "type": "positions",
        "positions": [["P-1", 106.52, 29.63, epoch_ms(at(2))], ["P-2", 106.51, 29.63, epoch_ms(at(1))]],
    }
    assert feed.stats == FeedStats(fixes=3, stale=1, frames=1, sent=2, skipped=1)
    assert feed.flush() == 0 and len(consoles.frames) == 1  # nothing moved since
    consoles.console_count = 0
    feed.take(b"P-3", fix("P-3", 1))
    assert feed.flush() == 0 and len(consoles.frames) == 1  # nobody watching: nothing encoded
    consoles.console_count = 3
    assert feed.flush() == 0  # ... and nothing kept for later (a console reads positions over HTTP)


# --- the hub's fan-out, with real sockets --------------------------------------------------------
async def test_one_frame_goes_to_every_console_and_to_no_phone(
    pg: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_centre(pg) as centre:
        consoles = [await centre.open(person) for person in ("operator", "commander", "viewer", "admin")]
        phones = [await centre.open(person) for person in ("responder", "other_responder")]
        offered: list[tuple[str, bytes]] = []
        offer = Client.offer

        def spy(client: Client, frame: bytes) -> bool:
            offered.append((client.user.role, frame))
            return offer(client, frame)

        monkeypatch.setattr(Client, "offer", spy)
        [frame] = positions_frames([["P-1", 106.53, 29.63, 1_795_000_000_000]])
        assert centre.hub.push_positions(frame) == 4
        assert sorted(role for role, _ in offered) == sorted(CONSOLE_ROLES)
        assert all(f is frame for _, f in offered)  # the same bytes, not encoded per client
        for console in consoles:
            got = await console.next_of("positions")
            assert got == {"type": "positions", "positions": [["P-1", 106.53, 29.63, 1_795_000_000_000]]}
        for phone in phones:  # a positions frame would have come before the answer to this ping
            assert (await phone.command("ping"))["type"] == "ack"
            assert not [f for f in phone.frames if f["type"] == "positions"]


async def test_a_console_that_stops_reading_skips_positions_and_stays_connected(pg: asyncpg.Pool) -> None:
    """Positions never grow a slow console's queue past the backlog nor cut it off; a console
    that reads gets every frame, and deltas still reach it in order."""
    async with live_centre(pg, positions_backlog=8, close_timeout_s=1.0) as centre:
        healthy = await centre.open("viewer")
        slow = await centre.open("operator", rcvbuf=4096)
        slow.ws.transport.pause_reading()
        slow_client = next(c for c in centre.hub.connected() if c.user.role == "operator")
        received = 0

        async def read() -> None:
            nonlocal received
            async for raw in healthy.ws:
                received += orjson.loads(raw)["type"] == "positions"

        reader = asyncio.create_task(read())
        rng = random.Random(6)
        took = []
        for i in range(500):  # ~20 KB each (random: compression would shrink repeats to nothing)
            moved = [[f"P-{i}-{k}", rng.uniform(106, 107), rng.uniform(29, 30), i] for k in range(400)]
            [frame] = positions_frames(moved)
            took.append(centre.hub.push_positions(frame))
            assert slow_client.queued <= 8
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 15
        while received < 500:
            assert time.monotonic() < deadline, f"the reading console got {received} of 500"
            await asyncio.sleep(0.02)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        assert min(took) == 1 and max(took) == 2  # the slow one took some, then skipped
        assert not slow_client.closed and centre.hub.client_count == 2
        healthy.seq = centre.board.seq
        await expect_delta(healthy, centre)
        await expect_delta(healthy, centre)


# --- the whole path on the real broker ---------------------------------------------------------
@contextlib.asynccontextmanager
async def running_feed(settings: Settings, hub: LiveHub, push_ms: int = 50) -> AsyncIterator[PositionFeed]:
    """The feed as the composition root runs it: its consumer at the end of positions.raw, its
    task stopped by the event."""
    consumer = await start_positions_consumer(settings)
    feed = PositionFeed(hub, push_ms)
    stopping = asyncio.Event()
    task = asyncio.create_task(feed.run(consumer, stopping), name="positions")
    try:
        yield feed
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
        await consumer.stop()


async def entry_of(peer: Peer, responder_id: str, timeout: float = 10.0) -> list[Any]:
    """The next position of `responder_id` this console is sent."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await peer.next_of("positions", timeout=max(0.01, deadline - time.monotonic()))
        for entry in frame["positions"]:
            if entry[0] == responder_id:
                return list(entry)


async def test_a_phones_position_reaches_every_console_and_no_phone(
    pg: asyncpg.Pool, feed_settings: Settings, feed_producer: AIOKafkaProducer
) -> None:
    async def send_position(fix: dict[str, Any]) -> None:
        key = fix["responder_id"].encode()
        await feed_producer.send_and_wait(topics.POSITIONS_RAW, key=key, value=orjson.dumps(fix))

    centre_with_phones = live_centre(pg, send_position=send_position)
    async with centre_with_phones as centre, running_feed(feed_settings, centre.hub):
        operator, viewer = await centre.open("operator"), await centre.open("viewer")
        phone, other = await centre.open("responder"), await centre.open("other_responder")
        rid = centre.responder_ids["responder"]
        seq = centre.board.seq
        sent = time.time() * 1000
        assert (await phone.command("position", lon=106.5312, lat=29.6301))["type"] == "ack"
        for console in (operator, viewer):
            entry = await entry_of(console, rid)
            assert entry[:3] == [rid, 106.5312, 29.6301] and abs(entry[3] - sent) < 5_000
        # Ephemeral: no seq spent, the next delta follows the last one (Peer checks every gap).
        assert centre.board.seq == seq
        operator.seq = seq
        await expect_delta(operator, centre)
        for p in (phone, other):
            assert (await p.command("ping"))["type"] == "ack"
            assert not [f for f in p.frames if f["type"] == "positions"]


async def test_posted_positions_reach_a_console_and_an_older_fix_never_overwrites_a_newer(
    pg: asyncpg.Pool,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    feed_settings: Settings,
    feed_producer: AIOKafkaProducer,
) -> None:
    await pool.execute(
        """INSERT INTO api_keys (key_hash, role, name) VALUES ($1, 'positions', 'positions')
           ON CONFLICT DO NOTHING""",
        api_key_hash(DEMO_API_KEYS["positions"]),
    )
    live = LiveState(redis)
    async with live_centre(pg) as centre, running_feed(feed_settings, centre.hub) as feed:
        app = create_http_app(
            ConsoleServices(
                settings=feed_settings,
                pool=pool,
                api_keys=ApiKeys(pool),
                sessions=centre.sessions,
                intake=IntakeService(pool, feed_producer),
                registry=RegistryService(pool, feed_producer, live),
                live=live,
            )
        )
        console = await centre.open("operator")
        rid, fence = centre.responder_ids["responder"], centre.responder_ids["other_responder"]
        now = datetime.now(UTC).replace(microsecond=123_000)
        newer, older = now, now - timedelta(seconds=30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:

            async def post(*fixes: tuple[str, float, float, datetime]) -> None:
                rows = [{"responder_id": r, "lon": x, "lat": y, "at": t.isoformat()} for r, x, y, t in fixes]
                body = {"positions": rows}
                headers = {"X-Api-Key": DEMO_API_KEYS["positions"]}
                answer = await http.post("/api/v1/intake/positions", json=body, headers=headers)
                assert answer.status_code == 202, answer.text

            await post((rid, 106.54, 29.64, newer), (rid, 106.50, 29.60, older))
            assert await entry_of(console, rid) == [rid, 106.54, 29.64, epoch_ms(newer)]
            await post((rid, 106.51, 29.61, older + timedelta(seconds=1)))  # late, and still older
            await post((fence, 106.52, 29.62, now))  # read after it, from the same intake
            assert await entry_of(console, fence) == [fence, 106.52, 29.62, epoch_ms(now)]
            pushed = [e for f in console.frames if f["type"] == "positions" for e in f["positions"]]
            shown = [e for e in pushed if e[0] == rid]
            assert shown == [[rid, 106.54, 29.64, epoch_ms(newer)]]
            assert feed.stats.stale >= 2

            # A console that (re)connects reads current positions, with the same `at`, over HTTP.
            roster = {"name": "测试民警", "kind": "police", "org": "测试派出所", "on_duty": True}
            await live.apply_roster(rid, roster)
            await live.apply_position(rid, 106.54, 29.64, epoch_ms(newer), None)
            bearer = {"Authorization": f"Bearer {centre.tokens['operator']}"}
            rows = (await http.get("/api/v1/responders/live", headers=bearer)).json()["responders"]
            row = next(r for r in rows if r["responder_id"] == rid)
            assert (row["lon"], row["lat"], row["at"]) == (106.54, 29.64, epoch_ms(newer))
