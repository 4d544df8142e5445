"""Hostile and broken WebSocket clients against a real live server: every bad frame gets an error
frame naming the problem or a documented close code, and a healthy console beside it keeps
getting every delta in order."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from console.live import (
    CLOSE_POLICY,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORISED,
    Client,
    LiveLimits,
)
from dispatcher.core.task import MAX_NOTE_CHARS, MAX_PHOTOS
from tests.console.live.harness import ORIGIN, Peer, expect_delta, live_centre


async def test_a_page_from_another_origin_is_refused_at_the_handshake(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("operator", origin=ORIGIN)
        for bad in ("http://evil.example", "http://127.0.0.1:9999", "null"):
            with pytest.raises(InvalidStatus) as refused:
                await Peer.connect(centre.url, origin=bad)
            assert refused.value.response.status_code == 403
        scripted = await centre.open("viewer")  # no Origin: an ops script, a test, a native app
        await expect_delta(healthy, centre)
        assert (await scripted.next_of("delta"))["seq"] == healthy.seq
        await scripted.close()
        await healthy.close()


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ({"type": "ping", "id": "p"}, "first frame must be"),
        ({"type": "dispatch", "id": "d", "incident_id": "INC-1"}, "first frame must be"),
        ("not json", "first frame must be"),
        ({"type": "auth", "id": "a"}, "invalid or expired session token"),
        ({"type": "auth", "id": "a", "token": "forged"}, "invalid or expired session token"),
        ({"type": "auth", "id": "a", "token": ["x"]}, "invalid or expired session token"),
        ({"type": "auth", "id": "a", "token": "x" * 70_000}, "frame larger than"),
    ],
)
async def test_nothing_is_served_before_authentication(
    pg: asyncpg.Pool, first: dict[str, Any] | str, message: str
) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("operator")
        intruder = await Peer.connect(centre.url)
        await intruder.send(first)
        code, frames = await intruder.closed_with()
        assert code == CLOSE_UNAUTHORISED
        [error] = frames  # no snapshot, no delta: only the refusal
        assert error["type"] == "error" and error["code"] in ("unauthorised", "too_large")
        assert message in error["message"]
        await expect_delta(healthy, centre)
        await healthy.close()


async def test_a_silent_connection_is_closed_after_the_auth_timeout(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, auth_timeout_s=0.5) as centre:
        silent = await Peer.connect(centre.url)
        code, frames = await silent.closed_with(3)
        assert code == CLOSE_UNAUTHORISED and frames == []
        assert centre.hub.client_count == 0


PHOTO = "http://127.0.0.1/api/v1/photos/p1.jpg"
MALFORMED: list[tuple[str | bytes, str, str]] = [
    ("not json", "malformed", "not a JSON object"),
    ("[1, 2]", "malformed", "not a JSON object"),
    ('"dispatch"', "malformed", "not a JSON object"),
    (b"\xff\xfe{", "malformed", "not a JSON object"),
    ("{" * 2000 + "}" * 2000, "malformed", "not a JSON object"),  # nested past the parser's limit
    ('{"id": "x1"}', "unknown_command", "unknown command type None"),
    ('{"type": 5, "id": "x2"}', "unknown_command", "unknown command type 5"),
    ('{"type": ["dispatch"], "id": "x3"}', "unknown_command", "unknown command type ['dispatch']"),
    ('{"type": "launch", "id": "x4"}', "unknown_command", "unknown command type 'launch'"),
    ('{"type": "resume", "id": "x5"}', "invalid", "since:"),
    ('{"type": "resume", "id": "x6", "since": "3"}', "invalid", "since:"),
    ('{"type": "resume", "id": "x7", "since": -1}', "invalid", "since:"),
    ('{"type": "resume", "id": "x8", "since": true}', "invalid", "since:"),
    ('{"type": "dispatch", "id": "x9"}', "invalid", "incident_id: missing"),
    ('{"type": "dispatch", "id": "x10", "incident_id": 7}', "invalid", "incident_id: missing"),
    ('{"type": "recommend", "id": "x11", "incident_id": {"$ne": 1}}', "invalid", "incident_id"),
    ('{"type": "dispatch", "id": "x12", "incident_id": "@A", "responders": "P-1"}', "invalid", "responders"),
    ('{"type": "dispatch", "id": "x13", "incident_id": "@A", "responders": [1, 2]}', "invalid", "responders"),
    ('{"type": "note", "id": "x14", "incident_id": "@A", "text": "' + "长" * 1001 + '"}', "invalid", "text"),
    ('{"type": "verify", "id": "x15", "incident_id": "@A", "passed": "yes"}', "invalid", "passed"),
    ('{"type": "cancel", "id": "x16", "incident_id": "@A", "reason": 42}', "invalid", "reason"),
    ('{"type": "dispatch", "incident_id": "@A"}', "invalid", "id:"),
    ('{"type": "dispatch", "id": {"a": 1}, "incident_id": "@A"}', "invalid", "id:"),
    ('{"type": "dispatch", "id": true, "incident_id": "@A"}', "invalid", "id:"),
]


async def test_malformed_frames_get_an_error_frame_and_the_connection_stays(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("viewer")
        operator = await centre.open("operator")
        for raw, code, message in MALFORMED:
            if isinstance(raw, str):
                raw = raw.replace("@A", centre.incident_a)
            await operator.send(raw)
            error = await operator.next_of("error")
            assert error["code"] == code and message in error["message"], (raw[:80], error)
            if error["id"] is not None:
                assert isinstance(error["id"], str) and error["id"].startswith("x")
        assert centre.commands == []  # none of it reached the dispatcher
        assert (await operator.command("ping"))["type"] == "ack"  # still served
        await expect_delta(healthy, centre)
        await healthy.close()
        await operator.close()


async def test_task_frames_with_wrong_fields_are_refused(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        phone = await centre.open("responder")
        t = centre.task_a
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"task_id": t}, "invalid", "task_action"),
            ({"task_id": t, "task_action": "explode"}, "invalid", "task_action"),
            # not a string, not even hashable: it used to raise inside the hub and drop the socket
            ({"task_id": t, "task_action": []}, "invalid", "task_action"),
            ({"task_id": t, "task_action": {"a": 1}}, "invalid", "task_action"),
            ({"task_id": t, "task_action": "done", "note": 5}, "invalid", "note"),
            # the domain's own limits (the socket used to take 2,000 characters and 10 photos,
            # acknowledge them, and the dispatcher then refused what it had acknowledged)
            ({"task_id": t, "task_action": "done", "note": "x" * (MAX_NOTE_CHARS + 1)}, "invalid", "note"),
            ({"task_id": t, "task_action": "done", "photo_urls": "http://x"}, "invalid", "photo_urls"),
            (
                {"task_id": t, "task_action": "done", "photo_urls": [PHOTO] * (MAX_PHOTOS + 1)},
                "invalid",
                "photo_urls",
            ),
            ({"task_id": t, "task_action": "done", "photo_urls": ["ftp://x/1.jpg"]}, "invalid", "photo_urls"),
            ({"task_id": t, "task_action": "done", "note": "回电\x00"}, "invalid", "note: must not contain"),
            ({"task_id": t, "task_action": "done", "photo_urls": ["\x00"]}, "invalid", "photo_urls.0"),
            ({"task_id": t, "task_action": "done", "passed": "true"}, "invalid", "passed"),
            ({"task_id": 17, "task_action": "accept"}, "forbidden", "not one of your open tasks"),
            ({"lon": "east"}, "invalid", "lon"),
        ]
        for fields, code, message in cases:
            kind = "position" if "lon" in fields else "task"
            answer = await phone.command(kind, **fields)
            assert answer["type"] == "error" and answer["code"] == code, (fields, answer)
            assert message in answer["message"], (fields, answer)
        assert centre.commands == [] and centre.positions == []
        # exactly at the domain's limits: acknowledged
        fine = await phone.command(
            "task", task_id=t, task_action="done", note="x" * MAX_NOTE_CHARS, photo_urls=[PHOTO] * MAX_PHOTOS
        )
        assert fine["type"] == "ack", fine
        await phone.close()


async def test_operator_commands_with_nul_anywhere_are_refused_by_name(pg: asyncpg.Pool) -> None:
    """A NUL reached the dispatcher, failed three times there and was dead-lettered after the
    operator had been told 'queued'; PostgreSQL cannot store it, so the socket refuses it."""
    async with live_centre(pg) as centre:
        operator = await centre.open("operator")
        a = centre.incident_a
        for fields, where in (
            ({"incident_id": a, "text": "联系人李女士\x00"}, "text"),
            ({"incident_id": a, "text": "记录", "reason": "\x00"}, "reason"),
            ({"incident_id": a, "text": "记录", "extra": {"deep": ["ok", "\x00"]}}, "extra.deep.1"),
        ):
            answer = await operator.command("note", **fields)
            assert answer["code"] == "invalid" and answer["message"].startswith(f"{where}: must not"), answer
        assert centre.commands == []
        await operator.close()


async def test_out_of_order_frames(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("viewer")
        operator = await centre.open("operator")
        again = await operator.command("auth", token=centre.tokens["operator"])
        assert again["code"] == "out_of_order" and "already authenticated" in again["message"]
        # A sequence number this server never issued (another server's, or made up): a full resync.
        ahead = await operator.command("resume", since=10**9)
        assert ahead["type"] == "ack"
        resync = await operator.next_of("snapshot")
        assert resync["resync"] is True and resync["seq"] == centre.board.seq
        # Acting on an incident that is not open here (closed, merged away, never existed).
        centre.publish(centre.incident_b, status="closed")
        for iid in (centre.incident_b, "INC-never"):
            refused = await operator.command("dispatch", incident_id=iid)
            assert refused["code"] == "invalid" and "is not open" in refused["message"], refused
        phone = await centre.open("other_responder")  # their task was on B, now closed
        gone = await phone.command("task", task_id=centre.task_b, task_action="accept")
        assert gone["code"] == "forbidden" and "not one of your open tasks" in gone["message"]
        assert centre.commands == []
        await expect_delta(healthy, centre)
        for peer in (healthy, operator, phone):
            await peer.close()


async def test_oversized_frames(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("viewer")
        operator = await centre.open("operator")
        limits = centre.hub.limits
        big = orjson.dumps({"type": "note", "id": "n1", "text": "x" * (limits.max_frame + 10)}).decode()
        await operator.send(big)
        error = await operator.next_of("error")
        assert error["code"] == "too_large" and str(limits.max_frame) in error["message"]
        assert (await operator.command("ping"))["type"] == "ack"  # a moderately large frame: still served
        await operator.send("x" * (limits.max_message + 1))  # not even read: the library closes
        code, _ = await operator.closed_with()
        assert code == CLOSE_TOO_BIG
        await expect_delta(healthy, centre)
        await healthy.close()


async def test_a_flood_is_rate_limited_then_disconnected(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        healthy = await centre.open("viewer")
        limits = centre.hub.limits
        # Just over the burst: the extra frame is dropped with an error, the connection stays.
        eager = await centre.open("operator")
        burst = [orjson.dumps({"type": "ping", "id": f"p{i}"}).decode() for i in range(limits.rate_burst + 3)]
        for frame in burst:
            await eager.send(frame)
        answers = [await eager.next_of("ack", "error") for _ in burst]
        limited = [a for a in answers if a["type"] == "error"]
        assert limited and all(a["code"] == "rate_limited" for a in limited), answers
        assert sum(a["type"] == "ack" for a in answers) >= limits.rate_burst  # the burst was served
        # (the refill and the strikes' fading are the token bucket's rules: tested on a clock below)
        # A flood that goes on after being told: closed with 1008.
        flooder = await centre.open("operator")
        for i in range(limits.rate_burst + limits.strikes + 20):
            try:
                await flooder.send({"type": "ping", "id": f"f{i}"})
            except Exception:
                break
        code, frames = await flooder.closed_with()
        assert code == CLOSE_POLICY
        assert frames[-1]["code"] == "rate_limited" and "disconnected" in frames[-1]["message"]
        assert sum(f["type"] == "ack" for f in frames) <= limits.rate_burst + 5
        await expect_delta(healthy, centre)
        await eager.close()
        await healthy.close()


def test_the_frame_rate_refills_and_strikes_fade_on_the_clock() -> None:
    """The rule behind `rate_limited` and 1008, on an injected clock (no sleeping, no margins)."""
    limits = LiveLimits(rate_per_s=10, rate_burst=5, strikes=3)
    client = Client(None, None, "t", limits)  # type: ignore[arg-type]
    t = client._stamp = 1000.0  # the clock, from here on given to every call
    assert [client.take_token(t) for _ in range(7)] == [True] * 5 + [False] * 2  # the burst, then over
    assert not client.abusive  # two strikes
    # a quarter second at 10 a second: two frames' worth back; the strikes fade by a quarter
    assert [client.take_token(t + 0.25) for _ in range(4)] == [True, True, False, False]
    assert client.abusive  # 3.75 strikes, over 3: cut off with 1008
    assert client.take_token(t + 10)  # ten seconds on: refilled, and the strikes have faded
    assert not client.abusive
    assert [client.take_token(t + 10) for _ in range(5)] == [True] * 4 + [False]  # burst, not more


async def test_unanswered_commands_are_bounded_per_client(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, pending_per_client=3) as centre:
        operator = await centre.open("operator")
        acks = [await operator.command("note", incident_id=centre.incident_a, text="记录") for _ in range(3)]
        assert all(a["type"] == "ack" and a["queued"] for a in acks)
        refused = await operator.command("note", incident_id=centre.incident_a, text="记录")
        assert refused["code"] == "too_many_pending" and "await the dispatcher" in refused["message"]
        # The dispatcher applies the first: its event carries the command id, a slot frees up.
        message = centre.event(centre.incident_a)
        message["event_id"] = f"{acks[0]['command_id']}#0"
        centre.hub.publish(message)
        # ... and refuses the second: the refusal is routed back, another slot frees up.
        centre.hub.publish({"type": "command.refused", "command_id": acks[1]["command_id"], "reason": "不行"})
        refusal = await operator.answer(acks[1]["id"])
        assert refusal["code"] == "refused" and refusal["message"] == "不行"
        assert centre.hub.pending_count == 1
        # ... and applies the third without a visible change (say, a dispatch with nobody to
        # offer): its "command.done" notice frees the last slot too.
        centre.hub.publish(
            {"type": "command.done", "command_id": acks[2]["command_id"], "incident_id": centre.incident_a}
        )
        assert centre.hub.pending_count == 0
        for _ in range(3):
            assert (await operator.command("note", incident_id=centre.incident_a, text="记录"))[
                "type"
            ] == "ack"
        await operator.close()
        await asyncio.sleep(0.1)
        assert centre.hub.pending_count == 0  # a gone client's commands are forgotten with it


async def test_the_server_declines_compression_so_a_shared_frame_is_never_encoded_per_client(
    pg: asyncpg.Pool,
) -> None:
    """The client offers permessage-deflate (the library's default); the server declines it, so a
    delta goes out to every console as the same bytes (the benchmark found per-connection
    deflate at a fifth of the console server's CPU)."""
    async with live_centre(pg) as centre:
        peer = await centre.open("operator")
        assert peer.ws.protocol.extensions == []
        await expect_delta(peer, centre)
        await peer.close()


async def test_one_user_holds_only_so_many_sockets_the_oldest_goes(pg: asyncpg.Pool) -> None:
    """A viewer opening sockets in a loop used to hold every one of them (and the snapshots
    they asked for): past the cap, their oldest socket is closed (4409)."""
    async with live_centre(pg, connections_per_user=3) as centre:
        operator = await centre.open("operator")
        mine = [await centre.open("viewer") for _ in range(3)]
        newest = await centre.open("viewer")
        code, frames = await mine[0].closed_with()
        assert code == CLOSE_SUPERSEDED and frames[-1]["code"] == "superseded"
        for peer in (*mine[1:], newest, operator):  # the others, and other users, stay
            assert (await peer.command("ping"))["type"] == "ack"
        assert len([c for c in centre.hub.connected() if c.user.role == "viewer"]) == 3
        for peer in (*mine[1:], newest, operator):
            await peer.close()


async def test_snapshots_are_rate_limited_per_client_and_shared_between_clients(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, snapshot_every_s=60) as centre:
        viewer = await centre.open("viewer")
        first = await viewer.command("snapshot")
        assert first["type"] == "ack" and (await viewer.next_of("snapshot"))["seq"] == centre.board.seq
        again = await viewer.command("snapshot")
        assert again["code"] == "rate_limited" and "one snapshot every 60 s" in again["message"]
        resumed = await viewer.command("resume", since=0)  # a resume may be a snapshot too
        assert resumed["code"] == "rate_limited"
        other = await centre.open("operator")  # another client: its own allowance
        assert (await other.command("snapshot"))["type"] == "ack"
        # one encoding of the board per state, whoever asks
        assert centre.board.snapshot() is centre.board.snapshot()
        before = centre.board.snapshot()
        centre.publish()
        assert centre.board.snapshot() is not before
        await viewer.close()
        await other.close()
