"""The console server's live side: the WebSocket protocol as a sans-I/O core (`protocol`: frames
in, validated requests and refusals out), each socket's queue and limits (`client`) and the hub
that owns every connection, fans out the board's deltas and routes commands (`hub`).
"""

from console.live.client import Client
from console.live.hub import LiveHub, Recommender, SendCommand, serve_live
from console.live.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_POLICY,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHORISED,
    COMMAND_ROLES,
    CONSOLE_ROLES,
    LiveLimits,
    allowed_origins,
)

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_POLICY",
    "CLOSE_SUPERSEDED",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHORISED",
    "COMMAND_ROLES",
    "CONSOLE_ROLES",
    "Client",
    "LiveHub",
    "LiveLimits",
    "Recommender",
    "SendCommand",
    "allowed_origins",
    "serve_live",
]
