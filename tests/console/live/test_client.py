"""One live socket's bookkeeping, without a socket: its queue bounded in frames and in bytes,
frames handed to the writer in order, and the rate strikes that fade with time."""

from __future__ import annotations

import asyncio
from typing import Any

from console.auth import User
from console.live.client import Client
from console.live.protocol import LiveLimits

USER = User("duty", "值班员", "operator")


def client(**limits: Any) -> Client:
    return Client(None, USER, "token", LiveLimits(**limits))  # type: ignore[arg-type]  # no socket needed


def test_the_queue_is_bounded_in_frames() -> None:
    c = client(queue_frames=3)
    assert [c.offer(b"x") for _ in range(4)] == [True, True, True, False]
    assert c.queued == 3 and c.queued_bytes == 3  # the refused frame was not queued


def test_the_queue_is_bounded_in_bytes_but_always_takes_one_frame() -> None:
    c = client(queue_bytes=10)
    assert c.offer(b"a" * 4) and c.offer(b"b" * 4)
    assert not c.offer(b"c" * 4)  # 12 > 10
    assert c.offer(b"d" * 2)  # exactly 10
    assert c.queued == 3 and c.queued_bytes == 10
    big = client(queue_bytes=10)
    assert big.offer(b"s" * 50)  # a snapshot larger than the bound still goes to an empty queue
    assert not big.offer(b"t")


async def test_frames_leave_in_order_and_the_writer_waits_for_the_next() -> None:
    c = client()
    for frame in (b"one", b"two", b"three"):
        c.offer(frame)
    assert [await c.next_frame() for _ in range(3)] == [b"one", b"two", b"three"]
    assert c.queued == 0 and c.queued_bytes == 0
    waiting = asyncio.create_task(c.next_frame())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing to send: the writer waits ...
    c.offer(b"four")
    assert await asyncio.wait_for(waiting, 1) == b"four"  # ... and wakes for the next frame


def test_a_dropped_queue_frees_its_room_and_a_closing_client_takes_nothing() -> None:
    c = client(queue_frames=2)
    assert c.offer(b"ab") and c.offer(b"cd") and not c.offer(b"ef")
    c.drop_queue()
    assert c.queued == 0 and c.queued_bytes == 0
    assert c.offer(b"gh") and c.queued == 1
    c.closed = True
    assert c.offer(b"ij")  # not "too far behind": it is being cut off anyway
    assert c.queued == 1 and c.queued_bytes == 2


def test_strikes_count_refusals_and_fade_at_one_a_second() -> None:
    c = client(rate_per_s=0.001, rate_burst=1, strikes=3)  # one token, practically no refill
    t = 1000.0
    assert c.take_token(t)
    assert [c.take_token(t) for _ in range(3)] == [False] * 3
    assert not c.abusive  # three strikes: at the bound, not over it
    assert not c.take_token(t) and c.abusive  # four
    assert not c.take_token(t + 0.5) and c.abusive  # 4 - 0.5 + 1 = 4.5
    assert not c.take_token(t + 2.0) and c.abusive  # 4.5 - 1.5 + 1 = 4
    assert not c.take_token(t + 4.0) and not c.abusive  # 4 - 2 + 1 = 3: back within the bound
    assert not c.take_token(t + 100.0) and not c.abusive  # faded to none, then one strike
