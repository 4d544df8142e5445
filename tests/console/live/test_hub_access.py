"""Who may send what over the WebSocket, and who receives what: every command type the hub
accepts, sent as every kind of user, against a real live server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from console.live import CLOSE_FORBIDDEN, COMMAND_ROLES
from tests.console.live.harness import Centre, Peer, live_centre, task

CONSOLES = ("operator", "commander", "viewer", "admin")
DISPATCHERS = {"operator", "commander"}
PHONES = ("responder", "other_responder")
EVERYONE = {*CONSOLES, *PHONES}

# Who may send each command type. A command type the hub accepts but this table does not list
# fails test_every_command_type_has_a_rule_here: a new command needs a decision.
ALLOWED: dict[str, set[str]] = {
    "ping": EVERYONE,
    "snapshot": set(CONSOLES),
    "resume": set(CONSOLES),
    "recommend": set(CONSOLES),  # read-only: what the plan would pick now
    "dispatch": DISPATCHERS,
    "remove": DISPATCHERS,
    "resolve": DISPATCHERS,
    "verify": DISPATCHERS,
    "cancel": DISPATCHERS,
    "merge": DISPATCHERS,
    "split": DISPATCHERS,
    "note": DISPATCHERS,
    "task": {"responder"},  # the task on incident A is theirs; other_responder's is on B
    "position": set(PHONES),
}


def sample(kind: str, centre: Centre) -> dict[str, Any]:
    """A well-formed command of each type (on incident A, whose task belongs to `responder`)."""
    a, b = centre.incident_a, centre.incident_b
    samples: dict[str, dict[str, Any]] = {
        "ping": {},
        "snapshot": {},
        "resume": {"since": 0},
        "recommend": {"incident_id": a},
        "dispatch": {"incident_id": a},
        "remove": {"incident_id": a, "responder_id": centre.responder_ids["responder"], "reason": "换人"},
        "resolve": {"incident_id": a},
        "verify": {"incident_id": a, "passed": True},
        "cancel": {"incident_id": a, "reason": "误报"},
        "merge": {"incident_id": a, "into": b},
        "split": {"incident_id": a, "from": b},
        "note": {"incident_id": a, "text": "已电话联系"},
        "task": {"task_id": centre.task_a, "task_action": "accept"},
        "position": {"lon": 106.53, "lat": 29.63, "accuracy_m": 8},
    }
    return samples[kind]


def test_every_command_type_has_a_rule_here() -> None:
    assert set(ALLOWED) == set(COMMAND_ROLES)
    assert EVERYONE == {p for people in ALLOWED.values() for p in people}


async def test_every_command_as_every_role(pg: asyncpg.Pool) -> None:
    async with live_centre(pg, snapshot_every_s=0) as centre:  # who may, not how often (test_hub_abuse)
        peers = {person: await centre.open(person) for person in sorted(EVERYONE)}
        for kind in sorted(COMMAND_ROLES):
            for person, peer in peers.items():
                before = len(centre.commands) + len(centre.positions)
                answer = await peer.command(kind, **sample(kind, centre))
                where = (kind, person, answer)
                if person in ALLOWED[kind]:
                    assert answer["type"] in ("ack", "recommendation"), where
                    if kind in ("snapshot", "resume"):
                        assert (await peer.next_of("snapshot", "resumed"))["type"], where
                    if answer.get("queued"):  # it went to the dispatcher in the user's name
                        assert centre.commands[-1]["actor"] == answer["command_id"].rsplit(":", 1)[0]
                else:
                    assert answer["type"] == "error" and answer["code"] == "forbidden", where
                    assert len(centre.commands) + len(centre.positions) == before, where
            await asyncio.sleep(0.1)  # stay well inside the rate limit
        acted = {c["actor"].split(":")[0] for c in centre.commands}
        assert acted == {"operator", "commander", "responder"}
        assert {c["actor"] for c in centre.commands if c["action"] == "task"} == {
            f"responder:{centre.responder_ids['responder']}"
        }
        assert {p["responder_id"] for p in centre.positions} == {
            centre.responder_ids[p] for p in PHONES
        }  # a phone's position is always its own, whatever it sends
        for peer in peers.values():
            await peer.close()


async def test_a_responder_acts_only_on_their_own_open_task(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        mine = await centre.open("responder")
        other = await centre.open("other_responder")
        theft = await other.command("task", task_id=centre.task_a, task_action="done", note="抢单")
        assert theft["code"] == "forbidden" and "not one of your open tasks" in theft["message"]
        ok = await mine.command("task", task_id=centre.task_a, task_action="accept")
        assert ok["type"] == "ack" and centre.commands[-1]["incident_id"] == centre.incident_a
        # Even naming another incident or responder in the frame changes nothing.
        spoof = await mine.command(
            "task",
            task_id=centre.task_a,
            task_action="accept",
            incident_id=centre.incident_b,
            responder_id=centre.responder_ids["other_responder"],
        )
        assert spoof["type"] == "ack"
        sent = centre.commands[-1]
        assert sent["incident_id"] == centre.incident_a
        assert sent["actor"] == f"responder:{centre.responder_ids['responder']}"
        assert "responder_id" not in sent["data"] and "incident_id" not in sent["data"]
        await mine.close()
        await other.close()


async def test_a_responder_account_without_a_responder_id_gets_no_live_access(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        peer = await Peer.connect(centre.url)
        await peer.send({"type": "auth", "id": "h", "token": centre.tokens["idless_responder"]})
        code, frames = await peer.closed_with()
        assert code == CLOSE_FORBIDDEN
        assert [f["code"] for f in frames] == ["forbidden"]
        assert centre.hub.client_count == 0


async def test_phones_receive_only_their_own_tasks_and_never_the_board(pg: asyncpg.Pool) -> None:
    async with live_centre(pg) as centre:
        viewer = await centre.open("viewer")
        admin = await centre.open("admin")
        mine = await centre.open("responder")
        other = await centre.open("other_responder")
        rid, other_rid = centre.responder_ids["responder"], centre.responder_ids["other_responder"]
        assert [t["task_id"] for t in mine.first["tasks"]] == [centre.task_a]
        assert [t["task_id"] for t in other.first["tasks"]] == [centre.task_b]
        # Changes on both incidents: plain incident changes and task events for each responder.
        centre.publish(centre.incident_a)
        centre.publish(centre.incident_b)
        for iid, task_id, who in (
            (centre.incident_a, centre.task_a, rid),
            (centre.incident_b, centre.task_b, other_rid),
            (centre.incident_a, f"{centre.task_a}-2", other_rid),  # a second task on A: other's
        ):
            message = centre.event(iid)
            tasks = [t for t in message["incident"]["tasks"] if t["task_id"] != task_id]
            message["incident"]["tasks"] = [*tasks, task(task_id, who, "accepted")]
            message.update(type="task.accept", data={"task_id": task_id, "responder_id": who})
            centre.hub.publish(message)
        # A task event whose data names one responder but whose task is another's goes nowhere.
        forged = centre.event(centre.incident_a)
        forged.update(type="task.accept", data={"task_id": centre.task_a, "responder_id": other_rid})
        centre.hub.publish(forged)
        seq = centre.publish(centre.incident_b)
        for console in (viewer, admin):  # consoles see every change
            while (await console.next_of("delta"))["seq"] != seq:
                pass
            assert console.seq == seq
            masked = [f for f in console.frames if f["type"] == "delta"]
            assert all(d["incident"]["caller_phone"] == "138****8000" for d in masked)
        await asyncio.sleep(0.3)
        for phone, own, own_rid in (
            (mine, {centre.task_a}, rid),
            (other, {centre.task_b, f"{centre.task_a}-2"}, other_rid),
        ):
            with_pending = await phone.command("ping")
            assert with_pending["type"] == "ack"
            frames = phone.frames
            kinds = {f["type"] for f in frames}
            assert kinds <= {"tasks", "task", "ack"}, kinds  # never a delta, snapshot or recommendation
            pushed = [f["task"] for f in frames if f["type"] == "task"]
            assert {t["task_id"] for t in pushed} == own
            assert all(t["responder_id"] == own_rid for t in pushed)
            raw = orjson.dumps(frames).decode()
            assert "13800138000" not in raw and "李女士" not in raw and "resident-1029" not in raw
        for peer in (viewer, admin, mine, other):
            await peer.close()
