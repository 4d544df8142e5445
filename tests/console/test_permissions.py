"""The permission table: the same as docs/security.md prints it, the same roles as the database
accepts, and keys and people kept apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import asyncpg

from console.permissions import KEY_PERMISSIONS, USER_PERMISSIONS, Perm, UserRole, key_allows, user_allows

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
Grant = tuple[str, str]  # ("key" | "user", role)


def granted_in_code() -> dict[Perm, set[Grant]]:
    table: dict[Perm, set[Grant]] = {p: set() for p in Perm}
    for kind, roles in (("key", KEY_PERMISSIONS), ("user", USER_PERMISSIONS)):
        for role, perms in roles.items():
            for p in perms:
                table[p].add((kind, role))
    return table


def granted_in_doc() -> dict[Perm, set[Grant]]:
    """The "permission | granted to" table of docs/security.md, read back."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("| permission | granted to |", 1)[1].split("\n\n", 1)[0]
    table: dict[Perm, set[Grant]] = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([a-z_.]+)`", cells[0]):
            perm, grants = Perm(name), set[Grant]()
            for who in cells[1].split(", "):
                if who == "the key of that source only":
                    grants.add(("key", name.split(".")[1]))
                elif who == "every user":
                    grants |= {("user", r) for r in USER_PERMISSIONS}
                elif who.endswith((" key", " user")):
                    role, kind = who.rsplit(" ", 1)
                    grants.add((kind, role))
                else:
                    grants.add(("user", who))
            table[perm] = grants
    return table


def test_the_documented_table_is_the_table_in_force() -> None:
    assert granted_in_doc() == granted_in_code()


def test_every_permission_is_granted_and_each_to_keys_or_people_by_its_nature() -> None:
    table = granted_in_code()
    assert all(table[p] for p in Perm), [p for p in Perm if not table[p]]
    machine = {p for p in Perm if p.value.startswith("intake.")}
    for perm, grants in table.items():
        kinds = {kind for kind, _ in grants}
        if perm in machine:
            assert kinds == {"key"}, perm  # no person posts as a camera or a hotline
        elif perm != Perm.REGISTRY_WRITE:
            assert kinds == {"user"}, perm  # sessions, reading, acting and revealing are people's
    assert all(user_allows(role, Perm.SESSION) for role in USER_PERMISSIONS)
    # Revealing or dispatching comes with seeing the board it acts on.
    for role in USER_PERMISSIONS:
        if user_allows(role, Perm.REVEAL) or user_allows(role, Perm.DISPATCH):
            assert user_allows(role, Perm.BOARD_READ), role


def test_a_role_name_grants_nothing_in_the_other_table() -> None:
    assert not key_allows("operator", Perm.DISPATCH) and not key_allows("commander", Perm.REVEAL)
    assert not user_allows("camera", Perm.INTAKE_CAMERA) and not user_allows(
        "positions", Perm.INTAKE_POSITIONS
    )
    # "admin" is both a key and a user role: the machine key changes the registry, never accounts.
    assert key_allows("admin", Perm.REGISTRY_WRITE) and not key_allows("admin", Perm.USERS_WRITE)
    assert user_allows("admin", Perm.USERS_WRITE) and not user_allows("admin", Perm.REVEAL)
    for perm in Perm:
        assert not key_allows(None, perm) and not user_allows(None, perm)
        assert not key_allows("", perm) and not user_allows("", perm)
        assert not user_allows("Operator", perm)  # role names are exact


async def test_the_roles_are_the_ones_the_database_accepts(pg: asyncpg.Pool) -> None:
    async def allowed(constraint: str) -> set[str]:
        definition = await pg.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", constraint
        )
        return set(re.findall(r"'([a-z_]+)'::text", definition))

    assert await allowed("users_role_check") == set(USER_PERMISSIONS) == set(get_args(UserRole))
    assert await allowed("api_keys_role_check") == set(KEY_PERMISSIONS)
