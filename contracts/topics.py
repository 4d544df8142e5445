"""Every Kafka topic name and Redis key prefix in one place.

Keys: everything about one incident is keyed by its incident id (one writer per incident);
raw reports are keyed by tracking number, from which the incident id is derived, so they land
on the same partition as the incident they become. Positions are keyed by responder id.
"""

from __future__ import annotations

from typing import Final

# --- Kafka topics -----------------------------------------------------------------------
REPORTS_RAW: Final = "reports.raw"  # intake -> normalise (key: tracking_no)
# intake -> position tracker: one fix (key: responder_id), or a batch of fixes (streams/fixes.py)
POSITIONS_RAW: Final = "positions.raw"
RESPONDERS_CHANGES: Final = "responders.changes"  # registry -> roster tracker (key: responder_id)
INCIDENTS_LOCATED: Final = "incidents.located"  # normalise -> enrich (key: incident_id)
INCIDENTS_ENRICHED: Final = "incidents.enriched"  # enrich -> dispatcher (key: incident_id)
INCIDENTS_EVENTS: Final = "incidents.events"  # dispatcher -> consoles and phones (key: incident_id)
INCIDENTS_COMMANDS: Final = "incidents.commands"  # consoles, phones, timers -> dispatcher (key: incident_id)
DEADLETTER: Final = "deadletter"  # any agent -> ops (key: original key)

PIPELINE_TOPICS: Final = (
    REPORTS_RAW,
    POSITIONS_RAW,
    RESPONDERS_CHANGES,
    INCIDENTS_LOCATED,
    INCIDENTS_ENRICHED,
    INCIDENTS_EVENTS,
    INCIDENTS_COMMANDS,
    DEADLETTER,
)

# --- Consumer groups outside Faust --------------------------------------------------------
DISPATCHER_GROUP: Final = "centre-dispatcher"

# --- Redis keys ---------------------------------------------------------------------------
# Live state's keys share one hash tag, so that they sit in one Redis Cluster slot: its scripts
# declare every key they can name in advance (KEYS[]), and the few they find only inside (the
# responders a GEOSEARCH returns, the grid a responder leaves) are in that same slot, on the node
# that runs the script. (Live state is one shard's worth of data: the street's responders.)
LIVE_SLOT: Final = "{live}"
RESPONDER_KEY: Final = LIVE_SLOT + "responder:"  # hash per responder: roster fields + live position
AVAILABLE_GEO_KEY: Final = LIVE_SLOT + "available:"  # GEO set per kind of responders free to dispatch
GRID_WORKERS_KEY: Final = LIVE_SLOT + "grid:workers:"  # set per grid of its responsible grid workers
LIVE_EPOCH_KEY: Final = LIVE_SLOT + "epoch"  # set once live state holds the whole roster (absent: rebuild)
LIVE_MOVED_KEY: Final = LIVE_SLOT + "moved"  # responders whose position changed since the last copy
LIVE_COPYING_KEY: Final = LIVE_SLOT + "moved:copying"  # the moved set taken aside while it is copied
LIVE_BUSY_KEY: Final = LIVE_SLOT + "busy"  # set of responders whose status is busy
CAMERA_KEY: Final = "camera:"  # hash per camera: name, lon, lat (read by key, no script)


def responder_key(responder_id: str) -> str:
    return f"{RESPONDER_KEY}{responder_id}"


def available_key(kind: str) -> str:
    return f"{AVAILABLE_GEO_KEY}{kind}"


def grid_workers_key(grid_id: str) -> str:
    return f"{GRID_WORKERS_KEY}{grid_id}"


def camera_key(camera_id: str) -> str:
    return f"{CAMERA_KEY}{camera_id}"
