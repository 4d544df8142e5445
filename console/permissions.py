"""Who may do what: the permission table, as data (docs/security.md prints the same table).

Principals are either API keys (intake sources, the registry administrator's machine key) or
logged-in users. Permissions are coarse here; object-level rules (a responder's own tasks,
a photo's incident) are checked by the handlers on top of them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


class Perm(StrEnum):
    INTAKE_CAMERA = "intake.camera"
    INTAKE_HOTLINE = "intake.hotline"
    INTAKE_APP = "intake.app"
    INTAKE_POSITIONS = "intake.positions"
    REGISTRY_WRITE = "registry.write"  # PUT responders / cameras
    USERS_WRITE = "users.write"  # create, change, disable console users
    SESSION = "session"  # me, logout: any logged-in user
    BOARD_READ = "board.read"  # all incidents (masked), grids, live responders, 三率
    OWN_TASKS_READ = "own_tasks.read"  # incidents where the caller holds a task (responder view)
    REVEAL = "reveal"  # unmasked caller contact, audited
    DISPATCH = "dispatch"  # commands over the WebSocket (dispatch, notes, verify ...)
    AUDIT_READ = "audit.read"
    PHOTO_UPLOAD = "photo.upload"
    PHOTO_READ_ANY = "photo.read_any"  # any photo; others only their own or their incidents'


# API-key roles (table api_keys) and user roles (table users).
UserRole = Literal["operator", "commander", "viewer", "admin", "responder"]

_STAFF_READ: Final = {Perm.SESSION, Perm.BOARD_READ, Perm.PHOTO_READ_ANY}

KEY_PERMISSIONS: Final[dict[str, frozenset[Perm]]] = {
    "camera": frozenset({Perm.INTAKE_CAMERA}),
    "hotline": frozenset({Perm.INTAKE_HOTLINE}),
    "app": frozenset({Perm.INTAKE_APP}),
    "positions": frozenset({Perm.INTAKE_POSITIONS}),
    "admin": frozenset({Perm.REGISTRY_WRITE}),
}

USER_PERMISSIONS: Final[dict[str, frozenset[Perm]]] = {
    "operator": frozenset({*_STAFF_READ, Perm.REVEAL, Perm.DISPATCH, Perm.AUDIT_READ}),
    "commander": frozenset({*_STAFF_READ, Perm.REVEAL, Perm.DISPATCH, Perm.AUDIT_READ}),
    "viewer": frozenset(_STAFF_READ),
    # The system administrator manages the registry and accounts and reads the audit trail;
    # it sees the board masked (to check the system works) but neither acts nor reveals.
    "admin": frozenset(
        {Perm.SESSION, Perm.BOARD_READ, Perm.REGISTRY_WRITE, Perm.USERS_WRITE, Perm.AUDIT_READ}
    ),
    "responder": frozenset({Perm.SESSION, Perm.OWN_TASKS_READ, Perm.PHOTO_UPLOAD}),
}


def key_allows(role: str | None, perm: Perm) -> bool:
    return role is not None and perm in KEY_PERMISSIONS.get(role, frozenset())


def user_allows(role: str | None, perm: Perm) -> bool:
    return role is not None and perm in USER_PERMISSIONS.get(role, frozenset())
