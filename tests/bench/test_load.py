"""The city benchmark's load drivers (`bench.load`), their cheap parts: which responders' fixes
are timed, how a fix's time is read, what a console's log keeps from the frames it reads, the
ready/stop control a driver process shares with the orchestrator, and a driver process's result
(or failure) coming back to the orchestrator.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from multiprocessing import get_context

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from bench import load
from bench.load import (
    ConsoleLog,
    Control,
    Target,
    at_ms,
    now_ns,
    read_console,
    sampled,
    sleep_until,
    spawn_driver,
)

IDS = [f"R-{k:06d}" for k in range(10_000)]
TIMED = next(rid for rid in IDS if zlib.crc32(rid.encode()) % load.POSITION_SAMPLE == 0)
UNTIMED = next(rid for rid in IDS if zlib.crc32(rid.encode()) % load.POSITION_SAMPLE != 0)
TARGET = Target("http://127.0.0.1:1", "ws://127.0.0.1:2", {"camera": "key-c", "positions": "key-p"})


# --- sampling and times ---------------------------------------------------------------------


def test_one_responder_in_ten_is_timed_the_same_way_everywhere() -> None:
    timed = [rid for rid in IDS if sampled(rid)]
    assert 0.08 <= len(timed) / len(IDS) <= 0.12
    assert sampled(TIMED) and not sampled(UNTIMED)
    # a pure function of the id: the sender and every console pick the same responders
    assert [rid for rid in IDS if sampled(rid)] == timed


def test_a_fixs_time_is_read_as_epoch_milliseconds() -> None:
    at = datetime(2026, 3, 1, 9, 30, 0, 125_000, tzinfo=timezone(timedelta(hours=8)))
    ms = 1_772_328_600_125
    assert int(at.timestamp() * 1000) == ms
    assert at_ms(at.isoformat()) == ms
    assert at_ms(at.astimezone(UTC).isoformat().replace("+00:00", "Z")) == ms
    assert at_ms(ms) == ms  # already milliseconds
    assert at_ms(ms / 1000) == ms  # seconds
    assert at_ms(1_772_328_600) == 1_772_328_600_000
    for junk in ("not a time", "", None, [ms], {"at": ms}):
        assert at_ms(junk) is None, junk


def test_now_is_the_monotonic_clock_every_process_shares() -> None:
    before = time.monotonic_ns()
    got = now_ns()
    assert before <= got <= time.monotonic_ns()


async def test_sleep_until_waits_for_the_moment_and_not_for_one_past() -> None:
    started = now_ns()
    await sleep_until(started - 10**9)
    assert now_ns() - started < 50_000_000
    await sleep_until(now_ns() + 60_000_000)
    assert now_ns() - started >= 60_000_000


# --- what a console keeps ---------------------------------------------------------------------


class FakeSocket:
    """A socket that yields the given frames, then closes (with `close`, or with no close frame)."""

    def __init__(self, frames: Sequence[str | bytes], close: Close | None) -> None:
        self.frames = frames
        self.close = close

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        for frame in self.frames:
            yield frame
            await asyncio.sleep(0.001)
        raise ConnectionClosed(self.close, None)


def frame(**fields: object) -> str:
    return orjson.dumps(fields).decode()


async def test_a_console_log_keeps_each_incidents_first_delta_and_the_timed_fixes() -> None:
    frames = [
        frame(type="snapshot", incidents=[{"incident_id": "INC-old"}]),
        frame(type="delta", incident={"incident_id": "INC-a", "status": "new"}),
        frame(type="delta", incident={"incident_id": "INC-b"}),
        frame(type="delta", incident={"incident_id": "INC-a", "status": "dispatched"}),  # not first
        frame(type="delta", incident={"status": "new"}),  # no id
        frame(type="delta", incident=None),
        frame(
            type="positions",
            positions=[
                [TIMED, 106.53, 29.63, 1_772_328_600_125],  # the compact form: id, lon, lat, at
                [UNTIMED, 106.53, 29.63, 1_772_328_600_125],
                {"responder_id": TIMED, "lon": 106.5, "lat": 29.6, "at": "2026-03-01T01:30:01+00:00"},
                ["short", 1],
                "junk",
            ],
        ),
        frame(type="positions", positions=[[TIMED, 106.54, 29.64, 1_772_328_600_125]]),  # seen before
        frame(type="positions"),
    ]
    log = ConsoleLog()
    before = now_ns()
    await read_console(FakeSocket(frames, Close(1011, "server overloaded")), log)  # type: ignore[arg-type]
    after = now_ns()

    assert set(log.incidents) == {"INC-a", "INC-b"}
    assert before <= log.incidents["INC-a"] < log.incidents["INC-b"] <= after
    assert set(log.positions) == {(TIMED, 1_772_328_600_125), (TIMED, 1_772_328_601_000)}
    # both came in one frame; a later repeat of the first does not move its time
    assert log.positions[(TIMED, 1_772_328_600_125)] == log.positions[(TIMED, 1_772_328_601_000)]
    assert log.incidents["INC-b"] < log.positions[(TIMED, 1_772_328_600_125)] <= after
    assert log.frames == len(frames)
    assert log.bytes == sum(len(f) for f in frames)
    assert log.closed == "1011"


async def test_a_console_cut_off_without_a_close_frame_says_so() -> None:
    log = ConsoleLog()
    await read_console(FakeSocket([frame(type="ping")], None), log)  # type: ignore[arg-type]
    assert (log.closed, log.frames, log.incidents) == ("no close frame", 1, {})


async def test_a_console_read_to_the_end_is_not_closed() -> None:
    log = ConsoleLog()

    class Ends:
        async def __aiter__(self) -> AsyncIterator[str]:
            yield frame(type="delta", incident={"incident_id": "INC-z"})

    await read_console(Ends(), log)  # type: ignore[arg-type]
    assert log.closed == "" and set(log.incidents) == {"INC-z"}


# --- control and driver processes -------------------------------------------------------------


async def test_control_tells_the_orchestrator_ready_and_the_driver_stop() -> None:
    ctx = get_context("spawn")
    ctl = Control(ctx.Event(), ctx.Event())
    assert not ctl.ready_event.is_set() and not ctl.stopping
    ctl.ready()
    assert ctl.ready_event.is_set()
    threading.Timer(0.1, ctl.stop_event.set).start()
    started = time.monotonic()
    await asyncio.wait_for(ctl.until_stopped(poll_s=0.01), 5)
    assert ctl.stopping and time.monotonic() - started >= 0.09


async def echo(ctl: Control, target: Target, times: int) -> dict[str, object]:
    """A driver: ready at once, then until told to stop; returns what it was given."""
    ctl.ready()
    await ctl.until_stopped(0.01)
    return {"http": target.http, "keys": target.keys, "twice": times * 2}


async def fail(ctl: Control) -> None:
    raise ValueError("the stack refused the driver")


async def hang(ctl: Control) -> None:
    ctl.ready()
    await asyncio.sleep(3600)


def test_a_target_crosses_to_a_driver_process() -> None:
    assert pickle.loads(pickle.dumps(TARGET)) == TARGET


def test_a_driver_process_returns_its_result_or_its_failure() -> None:
    ok = spawn_driver("echo", f"{__name__}:echo", target=TARGET, times=21)
    bad = spawn_driver("fail", f"{__name__}:fail")
    stuck = spawn_driver("hang", f"{__name__}:hang")
    try:
        ok.wait_ready(60)
        bad.wait_ready(60)  # a failing driver still lets the orchestrator go on
        stuck.wait_ready(60)

        ok.stop()
        expected = {"http": TARGET.http, "keys": TARGET.keys, "twice": 42}
        assert ok.join(60) == expected
        assert ok.result == expected  # kept on the driver too
        ok.process.join(10)
        assert ok.process.exitcode == 0

        with pytest.raises(RuntimeError, match=r"driver fail failed: .*:fail: ValueError") as failed:
            bad.join(60)
        assert "the stack refused the driver" in str(failed.value) and "Traceback" in str(failed.value)

        # a driver that gives no result in time is killed, not waited for
        with pytest.raises(RuntimeError, match="driver hang gave no result within 1s"):
            stuck.join(1.0)
        stuck.process.join(10)
        assert not stuck.process.is_alive()
    finally:
        for d in (ok, bad, stuck):
            if d.process.is_alive():
                d.process.kill()
            d.process.join(10)


def test_waiting_for_a_driver_that_never_gets_ready_times_out() -> None:
    ctx = get_context("spawn")
    never = load.Driver("never", ctx.Process(target=print), ctx.Queue(), ctx.Event(), ctx.Event())
    with pytest.raises(RuntimeError, match="driver never was not ready within 0s"):
        never.wait_ready(0.1)
