"""The live board a console server keeps: open incidents, numbered deltas, resume buffer.

Pure (no I/O): the server feeds it incident events from Kafka and asks it for a snapshot or
for the deltas after a sequence number. Events are de-duplicated by incident version, so
at-least-once delivery never shows a change twice. Each delta is encoded once and the same
bytes go to every console.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import orjson

from contracts.masking import masked_event, masked_incident
from contracts.states import OPEN_STATES, IncidentState


@dataclass(frozen=True, slots=True)
class Delta:
    seq: int
    incident_id: str
    frame: bytes  # the encoded {"type": "delta", ...} message


class Board:
    """Memory is bounded: the resume history by count and bytes, and the versions of closed
    incidents (kept to drop replays of their events) by count, oldest closed first."""

    def __init__(
        self, history: int = 10_000, history_bytes: int = 64 * 1024 * 1024, closed_kept: int = 100_000
    ) -> None:
        self.seq = 0
        self._open: dict[str, dict[str, Any]] = {}  # incident_id -> masked view
        self._versions: dict[str, int] = {}  # incident_id -> newest version applied
        self._closed: OrderedDict[str, None] = OrderedDict()  # closed incidents, oldest first
        self._closed_kept = closed_kept
        self._history: deque[Delta] = deque()
        self._history_max = history
        self._history_max_bytes = history_bytes
        self.history_bytes = 0
        self._snapshot_seq = -1  # the seq the encoded snapshots below are of
        self._snapshots: dict[bool, bytes] = {}  # resync or not -> the encoded snapshot

    def load(self, views: list[dict[str, Any]]) -> None:
        """Initial state from the database (before any delta)."""
        self._snapshot_seq = -1
        for view in views:
            self._versions[view["incident_id"]] = int(view["version"])
            if IncidentState(view["status"]) in OPEN_STATES:
                self._open[view["incident_id"]] = masked_incident(view)

    def version_of(self, incident_id: str) -> int:
        """The newest version applied (0: never seen); the resync compares it with PostgreSQL."""
        return self._versions.get(incident_id, 0)

    def apply(self, message: dict[str, Any]) -> Delta | None:
        """Apply one `incidents.events` message; None if it is old news (replay, duplicate)."""
        if "version" not in message or "incident" not in message:
            return None  # not a state change (a refusal is routed by the hub)
        incident_id = message["incident_id"]
        version = int(message["version"])
        if version <= self._versions.get(incident_id, 0):
            return None
        self._versions[incident_id] = version
        view = masked_incident(message["incident"])
        if IncidentState(view["status"]) in OPEN_STATES:
            self._open[incident_id] = view
            self._closed.pop(incident_id, None)
        else:
            self._open.pop(incident_id, None)
            self._closed[incident_id] = None
            self._closed.move_to_end(incident_id)
            while len(self._closed) > self._closed_kept:
                self._versions.pop(self._closed.popitem(last=False)[0], None)
        self.seq += 1
        event = masked_event({k: v for k, v in message.items() if k != "incident"})
        frame = orjson.dumps({"type": "delta", "seq": self.seq, "event": event, "incident": view})
        # orjson's bytes keep the capacity it grew to (several times the length): the history
        # and every client's queue hold this frame, so they hold an exact-size copy.
        frame = bytes(memoryview(frame))
        delta = Delta(self.seq, incident_id, frame)
        self._history.append(delta)
        self.history_bytes += len(frame)
        while len(self._history) > self._history_max or (
            self.history_bytes > self._history_max_bytes and len(self._history) > 1
        ):
            self.history_bytes -= len(self._history.popleft().frame)
        return delta

    def snapshot(self, resync: bool = False) -> bytes:
        """Every open incident, encoded once per board state (and kind) and shared by every
        client that asks before the next change (a busy street's board is hundreds of KB).
        `resync`: marked as the answer to a resume the history could not serve."""
        if self._snapshot_seq != self.seq:
            self._snapshot_seq, self._snapshots = self.seq, {}
        frame = self._snapshots.get(resync)
        if frame is None:
            incidents = sorted(self._open.values(), key=lambda v: (v["severity"], v["occurred_at"]))
            body: dict[str, Any] = {"type": "snapshot", "seq": self.seq, "incidents": incidents}
            if resync:
                body["resync"] = True
            frame = self._snapshots[resync] = bytes(memoryview(orjson.dumps(body)))
        return frame

    def since(self, seq: int) -> list[Delta] | None:
        """Deltas after `seq`, or None if they are no longer held (the client must resync)."""
        if seq > self.seq or seq < 0:
            return None
        if seq == self.seq:
            return []
        if not self._history or self._history[0].seq > seq + 1:
            return None
        start = seq + 1 - self._history[0].seq
        return list(self._history)[start:]

    def open_incidents(self) -> list[dict[str, Any]]:
        return list(self._open.values())

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        return self._open.get(incident_id)

    def task_owner(self, task_id: str) -> tuple[str, str] | None:
        """(incident id, responder id) of a task on an open incident."""
        for view in self._open.values():
            for task in view.get("tasks", ()):
                if task["task_id"] == task_id:
                    return view["incident_id"], task["responder_id"]
        return None

    def __len__(self) -> int:
        return len(self._open)
