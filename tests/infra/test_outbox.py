"""The outbox against the real PostgreSQL: sent at once, re-sent with back-off until the
dispatcher confirms it, never by two relays at once, and given up on loudly at the cap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from contracts.commands import Command
from dispatcher.core.plan import load_plans
from dispatcher.service import IncidentService
from infra import outbox


class Broker:
    """Records what the relay publishes (the real broker's part is covered by the fault drills)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(self, messages: Sequence[outbox.Message]) -> None:
        await asyncio.sleep(0.05)  # a send takes a while: overlapping relays must not both send
        self.sent.extend(m.message_id for m in messages)


def command(incident_id: str) -> Command:
    return Command(
        "note",
        incident_id,
        f"operator:duty:{uuid.uuid4().hex}",
        "operator:duty",
        datetime.now(UTC),
        data={"text": "到场核实"},
    )


@asynccontextmanager
async def last_confirmed(pool: asyncpg.Pool, sent: str = "now() + interval '1 day'") -> AsyncIterator[str]:
    """A message confirmed "tomorrow", so that it is the dispatcher's last confirmation whatever
    else this session confirmed; `sent` (SQL) says how far the dispatcher has got. By default
    it has got past everything: unconfirmed messages due a re-send were lost. Taken out after."""
    message_id = f"LAST-{uuid.uuid4().hex}"
    await pool.execute(
        f"""INSERT INTO outbox (message_id, topic, key, value, sent_at, attempts, done_at)
            VALUES ($1, 'incidents.commands', 'k', '\\x00', {sent}, 1, now() + interval '1 day')""",
        message_id,
    )
    try:
        yield message_id
    finally:
        await pool.execute("DELETE FROM outbox WHERE message_id = $1", message_id)


async def age(pool: asyncpg.Pool, message_id: str, seconds: float) -> None:
    await pool.execute(
        """UPDATE outbox SET created_at = created_at - make_interval(secs => $2),
                             sent_at = sent_at - make_interval(secs => $2) WHERE message_id = $1""",
        message_id,
        seconds,
    )


@pytest.fixture
async def overtaken(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The dispatcher has since confirmed messages sent long after any of the test's."""
    async with last_confirmed(pool):
        yield


async def test_a_message_is_resent_with_back_off_until_confirmed(pool: asyncpg.Pool, overtaken: None) -> None:
    msg = outbox.command_message(command("INC-OUTBOX-1"))
    await outbox.enqueue(pool, [msg])
    await outbox.enqueue(pool, [msg])  # idempotent
    broker = Broker()

    async def relay() -> int:
        """How many times this relay sent the test's message (the table is shared with other tests:
        their leftovers may be due too)."""
        before = len(broker.sent)
        await outbox.relay_once(pool, broker.publish, redeliver_after_s=10, max_attempts=5)
        return broker.sent[before:].count(msg.message_id)

    def sent() -> list[str]:
        return [m for m in broker.sent if m == msg.message_id]

    assert await relay() == 0  # its writer is about to send it: left alone for a grace second
    await age(pool, msg.message_id, 2)
    assert await relay() == 1 and sent() == [msg.message_id]  # never sent: sent now
    assert await relay() == 0
    await age(pool, msg.message_id, 11)
    assert await relay() == 1  # unconfirmed after 10 s: again
    await age(pool, msg.message_id, 11)
    assert await relay() == 0  # the next wait is 20 s
    await age(pool, msg.message_id, 10)
    assert await relay() == 1
    async with pool.acquire() as conn:
        await outbox.confirm(conn, msg.message_id)
    await age(pool, msg.message_id, 3600)
    assert await relay() == 0 and sent() == [msg.message_id] * 3


async def test_two_relays_never_send_one_message_twice_at_once(pool: asyncpg.Pool, overtaken: None) -> None:
    msgs = [outbox.command_message(command(f"INC-OUTBOX-2-{i}")) for i in range(20)]
    await outbox.enqueue(pool, msgs)
    for m in msgs:
        await age(pool, m.message_id, 2)
    broker = Broker()
    counts = await asyncio.gather(
        *(outbox.relay_once(pool, broker.publish, redeliver_after_s=10, max_attempts=5) for _ in range(3))
    )
    mine = [s for s in broker.sent if s in {m.message_id for m in msgs}]
    assert sorted(mine) == sorted(m.message_id for m in msgs) and sum(counts) >= len(msgs)


async def test_the_relay_gives_up_at_the_cap(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture, overtaken: None
) -> None:
    msg = outbox.command_message(command("INC-OUTBOX-3"))
    await outbox.enqueue(pool, [msg])
    broker = Broker()
    for _ in range(4):
        await age(pool, msg.message_id, 10_000)
        await outbox.relay_once(pool, broker.publish, redeliver_after_s=1, max_attempts=2)
    assert broker.sent.count(msg.message_id) == 2
    assert f"{msg.message_id} was sent 2 times and never confirmed" in caplog.text


async def sends_as_the_dispatcher_moves_on(
    pool: asyncpg.Pool, msg: outbox.Message, confirmed_sent_ago: Sequence[int]
) -> list[int]:
    """Relay once after each step: the dispatcher's last confirmation is of a message sent
    that many seconds ago (negative: stamped later than now). How often `msg` went out by then."""
    broker = Broker()
    counts = []
    async with last_confirmed(pool) as last:
        for ago in confirmed_sent_ago:
            await pool.execute(
                "UPDATE outbox SET sent_at = now() - make_interval(secs => $2) WHERE message_id = $1",
                last,
                float(ago),
            )
            await outbox.relay_once(pool, broker.publish, redeliver_after_s=10, max_attempts=5)
            counts.append(broker.sent.count(msg.message_id))
    return counts


async def test_a_message_late_behind_a_backlog_is_not_sent_again_until_overtaken(pool: asyncpg.Pool) -> None:
    """Under a backlog every command is late; re-sending them all adds to the backlog. A due
    message is re-sent only once the dispatcher has confirmed messages sent well after it."""
    msg = outbox.command_message(command("INC-OUTBOX-4"))
    await outbox.enqueue(pool, [msg])
    await outbox.mark_sent(pool, [msg.message_id])
    await age(pool, msg.message_id, 75)
    # the dispatcher applies commands sent 20 s before ours (late, not lost); then one sent 11 s
    # after ours (partitions lag one another: still late); then one sent 61 s after ours (past
    # six back-offs): ours was lost
    assert await sends_as_the_dispatcher_moves_on(pool, msg, [95, 64, 14]) == [0, 0, 1]


async def test_a_message_its_writer_has_not_noted_yet_is_not_sent_again_behind_a_backlog(
    pool: asyncpg.Pool,
) -> None:
    """A writer notes its sends once its whole fetch is acknowledged, seconds later under load.
    In the city benchmark the relay took every such forward for never sent and sent it again."""
    msg = outbox.command_message(command("INC-OUTBOX-5"))
    await outbox.enqueue(pool, [msg])
    await age(pool, msg.message_id, 5)  # written 5 s ago, its writer still busy with the fetch
    # the dispatcher confirms commands written 30 s before ours (ours is on its way); then one
    # sent 61 s after ours was written: ours never went out
    assert await sends_as_the_dispatcher_moves_on(pool, msg, [35, -56]) == [0, 1]


def test_lost_before_tells_a_lost_message_from_a_late_one() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    slack = timedelta(seconds=10)
    # nothing ever confirmed, or nothing for longer than the slack: stalled, or the log is gone
    assert outbox.lost_before(None, now, slack) == now
    stalled = outbox.Progress(now - timedelta(seconds=30), now - timedelta(seconds=11))
    assert outbox.lost_before(stalled, now, slack) == now
    # confirming, 30 s behind: messages sent before (30 + 6 × 10) s ago were overtaken
    behind = outbox.Progress(now - timedelta(seconds=30), now - timedelta(seconds=1))
    assert outbox.lost_before(behind, now, slack) == now - timedelta(seconds=90)
    # confirmed before its sender noted the send (a fast pipeline): the confirmation stands in
    assert outbox.lost_before(outbox.Progress(None, now), now, slack) == now - 6 * slack


async def test_a_command_refused_by_the_dispatcher_is_confirmed_in_the_outbox(pool: asyncpg.Pool) -> None:
    """The dispatcher marks a command done in the transaction that applies (or refuses) it."""
    service = IncidentService(pool, load_plans(None))
    cmd = command("INC-NO-SUCH-INCIDENT")
    msg = outbox.command_message(cmd)
    await outbox.enqueue(pool, [msg])
    result = await service.handle(cmd)
    assert result.refused is not None  # refused still counts as delivered
    assert await pool.fetchval("SELECT done_at FROM outbox WHERE message_id = $1", msg.message_id)


async def test_the_outbox_and_the_inbox_are_re_sent_by_one_rule(pool: asyncpg.Pool, overtaken: None) -> None:
    """Both re-senders pick what is due with the same query: never sent after the grace, or last
    sent longer ago than the doubling back-off, fewer than the cap, and never what is confirmed."""
    msg = outbox.command_message(command("INC-OUTBOX-RULE"))
    await outbox.enqueue(pool, [msg])
    tracking_no = f"A{uuid.uuid4().hex[:12]}"
    await pool.execute(
        """INSERT INTO reports (tracking_no, source, source_id, received_at, payload)
           VALUES ($1, 'app', $1, now() - interval '5 s', '{}'::jsonb)""",
        tracking_no,
    )
    await age(pool, msg.message_id, 5)
    async with pool.acquire() as conn, conn.transaction():
        assert msg.message_id in {r["message_id"] for r in await outbox.OUTBOX.due(conn, 1.0, 10, 5, 500)}
        assert tracking_no in {r["tracking_no"] for r in await outbox.INBOX.due(conn, 1.0, 10, 5, 500)}
        await outbox.OUTBOX.mark_sent(conn, [msg.message_id])
        await outbox.INBOX.mark_sent(conn, [tracking_no])
    async with pool.acquire() as conn, conn.transaction():
        # just sent: inside the back-off, neither is due
        assert msg.message_id not in {r["message_id"] for r in await outbox.OUTBOX.due(conn, 1.0, 10, 5, 500)}
        assert tracking_no not in {r["tracking_no"] for r in await outbox.INBOX.due(conn, 1.0, 10, 5, 500)}
        # a filed report and a confirmed message are never due again
        await pool.execute(
            "UPDATE reports SET incident_id = 'INC-x', published_at = now() - interval '1 hour' "
            "WHERE tracking_no = $1",
            tracking_no,
        )
        assert tracking_no not in {r["tracking_no"] for r in await outbox.INBOX.due(conn, 1.0, 10, 5, 500)}
