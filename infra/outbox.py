"""The transactional outbox: commands that must reach the dispatcher, whatever the broker does.

A message is written in the same transaction as the state that needs it (a merge's forward to
the other incident, a due timer) or before an operator's command is acknowledged, published
at once, and published again with back-off until the dispatcher confirms it applied the
command (it marks the row done in the transaction that applies it). A broker that comes back
empty, or a crash between commit and publish, therefore delays a command but never loses it;
the command id makes every re-send change nothing. A message merely late behind a backlog is
not sent again (`lost_before`): under load, re-sends were most of what the dispatcher read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import asyncpg
import orjson

from contracts import topics
from contracts.commands import Command, command_json

log = logging.getLogger(__name__)
FIRST_SEND_GRACE_S = 1.0  # a row its writer is about to publish itself is left to it this long
KEEP_DONE_S = 24 * 3600
OVERTAKEN: Final = 6  # overtaken by this many back-offs: lost, not merely late (`lost_before`)


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    topic: str
    key: str
    value: bytes


def command_message(cmd: Command | dict[str, object]) -> Message:
    body = command_json(cmd) if isinstance(cmd, Command) else cmd
    return Message(
        str(body["command_id"]), topics.INCIDENTS_COMMANDS, str(body["incident_id"]), orjson.dumps(body)
    )


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool, messages: Sequence[Message]) -> None:
    """Inside the caller's transaction; an id already queued is kept as it was (idempotent)."""
    if not messages:
        return
    await conn.executemany(
        """INSERT INTO outbox (message_id, topic, key, value) VALUES ($1, $2, $3, $4)
           ON CONFLICT (message_id) DO NOTHING""",
        [(m.message_id, m.topic, m.key, m.value) for m in messages],
    )


async def confirm(conn: asyncpg.Connection, message_id: str) -> None:
    """The consumer applied (or refused) this message: stop re-sending it."""
    await conn.execute(
        "UPDATE outbox SET done_at = now() WHERE message_id = $1 AND done_at IS NULL", message_id
    )


async def refuse(conn: asyncpg.Connection, message_id: str, reason: str) -> None:
    """Its consumer refused this message for good (a dead letter): stop re-sending it, and keep
    why. A message another consumer already confirmed stays as it was."""
    await conn.execute(
        """UPDATE outbox SET done_at = now(), refused_reason = left($2, 500)
            WHERE message_id = $1 AND done_at IS NULL""",
        message_id,
        reason,
    )


async def mark_sent(pool: asyncpg.Pool, message_ids: Sequence[str]) -> None:
    if message_ids:
        await pool.execute(
            """UPDATE outbox SET sent_at = now(), attempts = attempts + 1
                WHERE message_id = ANY($1::text[]) AND done_at IS NULL""",
            list(message_ids),
        )


Publish = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Resend:
    """A table whose rows are re-sent until their consumer confirms them: the outbox (commands,
    forwards, timers; confirmed when applied) and the intake's inbox (reports; confirmed when
    filed in an incident). One query picks what is due and lost, the same way for both."""

    table: str
    key: str  # the row's id
    columns: str  # what the sender needs of each row
    pending: str  # SQL: not confirmed (nor given up on)
    sent: str  # when last sent (NULL: never noted as sent)
    created: str  # when written
    done: str  # when confirmed

    async def due(
        self,
        conn: asyncpg.Connection,
        grace_s: float,
        redeliver_after_s: float,
        max_attempts: int,
        limit: int,
    ) -> list[asyncpg.Record]:
        """The rows to send now, locked until the caller's transaction ends (several senders never
        send one twice at once): fewer than `max_attempts` sends; never sent and older than
        `grace_s` (its writer may still be sending it), or last sent longer ago than the back-off
        (`redeliver_after_s`, doubling per attempt, up to 64 times); and lost, not merely late
        (`lost_before`, with `redeliver_after_s` as the slack), oldest first."""
        now, last = await progress(conn, self)
        return list(
            await conn.fetch(
                f"""SELECT {self.columns}, attempts FROM {self.table}
                     WHERE {self.pending} AND attempts < $3
                       AND (({self.sent} IS NULL AND {self.created} < now() - make_interval(secs => $1))
                         OR {self.sent} < now() - make_interval(secs => $2 * power(2, least(attempts - 1, 6)))
                       )
                       AND coalesce({self.sent}, {self.created}) < $5
                     ORDER BY {self.created} LIMIT $4 FOR UPDATE SKIP LOCKED""",
                float(grace_s),
                float(redeliver_after_s),
                max_attempts,
                limit,
                lost_before(last, now, timedelta(seconds=redeliver_after_s)),
            )
        )

    async def mark_sent(self, conn: asyncpg.Connection, ids: Sequence[str]) -> None:
        await conn.execute(
            f"""UPDATE {self.table} SET {self.sent} = now(), attempts = attempts + 1
                 WHERE {self.key} = ANY($1::text[])""",
            list(ids),
        )


OUTBOX: Final = Resend(
    "outbox",
    "message_id",
    "message_id, topic, key, value",
    "done_at IS NULL",
    "sent_at",
    "created_at",
    "done_at",
)
INBOX: Final = Resend(
    "reports",
    "tracking_no",
    "tracking_no, source, payload, received_at",
    "incident_id IS NULL AND refused_at IS NULL",
    "published_at",
    "received_at",
    "filed_at",
)


@dataclass(frozen=True, slots=True)
class Progress:
    """The message its consumer confirmed last (an outbox command applied, an inbox report
    filed): how far the pipeline has got."""

    sent_at: datetime | None  # None: confirmed before its sender noted the send
    done_at: datetime


def lost_before(last: Progress | None, now: datetime, slack: timedelta) -> datetime:
    """Messages sent and not yet confirmed count as lost when sent before this instant.

    The pipeline confirms messages roughly in the order they were sent. If it has confirmed
    nothing for `slack` (or ever), it is stalled or its log is gone: every one is lost. Else it
    is working through messages sent around `last.sent_at`; those sent more than OVERTAKEN
    times `slack` earlier were overtaken, hence lost. The rest are late and are left alone: re-sending them
    would add to the backlog that makes them late. The margin allows for partitions that lag
    one another: in the city benchmark, merges all forwarded to one busy incident held its
    partition back, the others overtook it by more than 10 s, and reports were re-sent."""
    if last is None or last.done_at < now - slack:
        return now
    return (last.sent_at or last.done_at) - OVERTAKEN * slack


async def progress(conn: asyncpg.Connection, of: Resend) -> tuple[datetime, Progress | None]:
    """The database's clock and the last confirmation in `of`'s table (one index probe)."""
    sent, done, table = of.sent, of.done, of.table
    row = await conn.fetchrow(
        f"""SELECT now() AS now, last.sent_at, last.done_at
              FROM (SELECT 1) one LEFT JOIN LATERAL (
                   SELECT {sent} AS sent_at, {done} AS done_at FROM {table} WHERE {done} IS NOT NULL
                    ORDER BY {done} DESC LIMIT 1) last ON true"""
    )
    assert row is not None
    if row["done_at"] is None:
        return row["now"], None
    return row["now"], Progress(row["sent_at"], row["done_at"])


def give_up_on(sent: Sequence[tuple[str, int]], max_attempts: int, what: str) -> None:
    """Stop re-sending loudly: an operator must look (the dead-letter topic says why)."""
    for message_id, attempts in sent:
        if attempts >= max_attempts:
            log.error("%s was sent %d times and %s; no more re-sends", message_id, attempts, what)


async def relay_once(
    pool: asyncpg.Pool, publish: Publish, redeliver_after_s: float, max_attempts: int, limit: int = 500
) -> int:
    """Publish every message not yet confirmed and lost (`lost_before`, with redeliver_after_s
    as the slack): never noted as sent (after a grace its writer may still be sending it in),
    or last sent longer ago than its back-off (redeliver_after_s doubling per attempt). A writer
    notes its sends only once its whole fetch is acknowledged, seconds later under load, so a
    message never noted as sent is judged lost like a sent one, by when it was written. Give up
    loudly after max_attempts. Several dispatchers may run this: rows are locked while they are
    sent, so each goes out once."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await OUTBOX.due(conn, FIRST_SEND_GRACE_S, redeliver_after_s, max_attempts, limit)
        if not rows:
            return 0
        await publish([Message(r["message_id"], r["topic"], r["key"], bytes(r["value"])) for r in rows])
        await OUTBOX.mark_sent(conn, [r["message_id"] for r in rows])
    give_up_on([(r["message_id"], r["attempts"] + 1) for r in rows], max_attempts, "never confirmed")
    return len(rows)


async def prune(pool: asyncpg.Pool) -> int:
    status = await pool.execute(
        "DELETE FROM outbox WHERE done_at < now() - make_interval(secs => $1)", float(KEEP_DONE_S)
    )
    return int(status.split()[-1])


__all__ = [
    "INBOX",
    "OUTBOX",
    "Message",
    "Progress",
    "Resend",
    "command_message",
    "confirm",
    "enqueue",
    "give_up_on",
    "lost_before",
    "mark_sent",
    "progress",
    "prune",
    "refuse",
    "relay_once",
]
