"""Live responder state in Redis: roster fields, last position, availability by kind.

Each responder is a hash; responders free to dispatch (on duty, status available, position
known) are members of one GEO set per kind, which is what nearest-responder lookups search.
Both updates run as Lua scripts so the hash and the GEO set change together, and a position
older than the one stored is ignored (replays and out-of-order fixes change nothing).

The same scripts keep two small sets for the dispatcher's live keeper (dispatcher/livekeeper.py),
so that its periodic work follows what changed rather than the whole roster: the responders
whose position moved since the last copy to PostgreSQL, and the responders marked busy.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from contracts import topics
from contracts.kinds import KINDS

# Every script below is given the kinds' GEO sets as KEYS, in `contracts.kinds.KINDS` order,
# after its own keys; `geo_of(kind)` picks one by the kind a responder's hash holds.
_GEO_OF = """
local function geo_of(kind, first)
  for i = 1, #KINDS do if KINDS[i] == kind then return KEYS[first + i - 1] end end
  return nil
end
"""

# KEYS[1] responder hash, KEYS[2] the moved set, KEYS[3..] the kinds' GEO sets.
# ARGV: responder_id, lon, lat, at_ms, accuracy, '0' when the fix is not a move to copy, and the
# latest time a stored fix may have (now, with the hosts' clock tolerance): a stored time beyond it
# was dated in the future, and is no reason to ignore a real fix (it would pin the responder).
_APPLY_POSITION = _GEO_OF + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local prev = tonumber(redis.call('HGET', KEYS[1], 'at_ms') or '-1')
local at = tonumber(ARGV[4])
if prev >= at and prev <= tonumber(ARGV[7]) then return 0 end
redis.call('HSET', KEYS[1], 'lon', ARGV[2], 'lat', ARGV[3], 'at_ms', ARGV[4], 'accuracy_m', ARGV[5])
if ARGV[6] ~= '0' then redis.call('SADD', KEYS[2], ARGV[1]) end
local geo = geo_of(redis.call('HGET', KEYS[1], 'kind'), 3)
if geo == nil then return 1 end
local duty = redis.call('HGET', KEYS[1], 'on_duty')
local status = redis.call('HGET', KEYS[1], 'status')
if duty == '1' and status == 'available' then
  redis.call('GEOADD', geo, ARGV[2], ARGV[3], ARGV[1])
else
  redis.call('ZREM', geo, ARGV[1])
end
return 1
"""

# KEYS[1] responder hash, KEYS[2] the new grid's worker set, KEYS[3..] the kinds' GEO sets (a kind
# may change). The grid the responder leaves is read from its hash: its set, named from
# ARGV[#ARGV] (the grid key prefix), shares the live slot (contracts.topics.LIVE_SLOT).
# ARGV: responder_id, kind, on_duty ('1'/'0'), then field/value pairs (grid_id among them), then
# the grid key prefix.
_APPLY_ROSTER = _GEO_OF + """
local grid_prefix = ARGV[#ARGV]
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
local old_grid = redis.call('HGET', KEYS[1], 'grid_id')
if old_grid and old_grid ~= '' then redis.call('SREM', grid_prefix .. old_grid, ARGV[1]) end
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'on_duty', ARGV[3])
for i = 4, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('HEXISTS', KEYS[1], 'status') == 0 then redis.call('HSET', KEYS[1], 'status', 'available') end
local status = redis.call('HGET', KEYS[1], 'status')
local lon = redis.call('HGET', KEYS[1], 'lon')
local lat = redis.call('HGET', KEYS[1], 'lat')
local grid = redis.call('HGET', KEYS[1], 'grid_id')
if ARGV[2] == 'grid_worker' and grid and grid ~= '' then redis.call('SADD', KEYS[2], ARGV[1]) end
local geo = geo_of(ARGV[2], 3)
if geo ~= nil and ARGV[3] == '1' and status == 'available' and lon and lat then
  redis.call('GEOADD', geo, lon, lat, ARGV[1])
end
return 1
"""


# Hosts' clocks may disagree by this much: a stored fix up to it ahead of our now is honoured.
CLOCK_TOLERANCE_MS: Final = 2_000


def _s(value: Any) -> str:
    """Redis answers bytes (the client does not decode): text out."""
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS[1] responder hash, KEYS[2] the busy set, KEYS[3..] the kinds' GEO sets.
# ARGV: responder_id, status ('busy' | 'available').
_SET_STATUS = _GEO_OF + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[2] == 'busy' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local geo = geo_of(redis.call('HGET', KEYS[1], 'kind'), 3)
if geo == nil then return 1 end
local duty = redis.call('HGET', KEYS[1], 'on_duty')
local lon = redis.call('HGET', KEYS[1], 'lon')
local lat = redis.call('HGET', KEYS[1], 'lat')
if ARGV[2] == 'available' and duty == '1' and lon and lat then
  redis.call('GEOADD', geo, lon, lat, ARGV[1])
else
  redis.call('ZREM', geo, ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Nearby:
    responder_id: str
    distance_m: float
    lon: float
    lat: float


SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> Redis:
    """The one way services reach Redis: a call to a server that stopped answering fails in
    seconds (and is retried by its caller) instead of holding a consumer and its transaction."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=10,
    )


SEARCH_RADII_M: Final = (150.0, 500.0, 1_500.0, 5_000.0)  # tried before the full radius

# KEYS[1] a kind's GEO set. ARGV: lon, lat, count, radius... (smallest first). GEOSEARCH gathers
# every member inside the radius before it sorts and cuts to `count`, so a city-wide radius
# scans the whole set; small circles first, server-side (one round trip): once a circle holds
# `count` responders they are the nearest, since everyone outside it is farther away.
_NEAREST = """
local found = {}
for i = 4, #ARGV do
  found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[i], 'm',
                     'ASC', 'COUNT', ARGV[3], 'WITHCOORD', 'WITHDIST')
  if #found >= tonumber(ARGV[3]) then return found end
end
return found
"""


# Everything one enrichment needs, in one round trip (it was eight: a search and a roster read
# per kind, the grid's workers and theirs). KEYS[1..n-1] the kinds' GEO sets, KEYS[n] the
# grid's grid-worker set. ARGV: lon, lat, count, the number of radii, the radii, the responder
# key prefix, then the roster fields. Per kind {search rows, roster rows}, then {grid workers
# (sorted), their roster rows}. The responders' hashes it reads are found, not declared: they
# share the live slot (contracts.topics.LIVE_SLOT).
_CANDIDATES = """
local lon, lat, count, nr = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix = ARGV[5 + nr]
local fields = {}
for i = 6 + nr, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
for k = 1, #KEYS - 1 do
  local found = {}
  for i = 5, 4 + nr do
    found = redis.call('GEOSEARCH', KEYS[k], 'FROMLONLAT', lon, lat, 'BYRADIUS', ARGV[i], 'm',
                       'ASC', 'COUNT', count, 'WITHCOORD', 'WITHDIST')
    if #found >= count then break end
  end
  local rows = {}
  for j = 1, #found do rows[j] = redis.call('HMGET', prefix .. found[j][1], unpack(fields)) end
  out[k] = {found, rows}
end
local ids = redis.call('SMEMBERS', KEYS[#KEYS])
table.sort(ids)
local rows = {}
for j = 1, #ids do rows[j] = redis.call('HMGET', prefix .. ids[j], unpack(fields)) end
out[#KEYS] = {ids, rows}
return out
"""


# KEYS[1] the moved set, KEYS[2] where it is copied from. The moved set is taken aside only
# once the previous copy finished (a copy cut short is resumed, not dropped); fixes applied
# meanwhile go to a new moved set. Returns 1 when there is a set to copy.
_TAKE_MOVED = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return 1
"""


_GEO_KEYS: Final = tuple(topics.available_key(k) for k in KINDS)


def _with_kinds(script: str) -> str:
    """The script with the kinds, in the order their GEO sets are passed, as a Lua table."""
    return "local KINDS = {" + ", ".join(repr(k) for k in KINDS) + "}\n" + script


def _search_radii(radius_m: float) -> list[float]:
    return [r for r in SEARCH_RADII_M if r < radius_m] + [radius_m]


def _roster_call(responder_id: str, fields: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Keys and arguments of the roster script for one responder."""
    kind = str(fields["kind"])
    on_duty = "1" if fields.get("on_duty") else "0"
    extra: list[str] = []
    for name in ("name", "org", "grid_id"):
        extra += [name, "" if fields.get(name) is None else str(fields[name])]
    extra += ["skills", ",".join(fields.get("skills") or [])]
    grid = topics.grid_workers_key(str(fields.get("grid_id") or ""))
    keys = [topics.responder_key(responder_id), grid, *_GEO_KEYS]
    return keys, [responder_id, kind, on_duty, *extra, topics.GRID_WORKERS_KEY]


@dataclass(frozen=True, slots=True)
class Candidates:
    """What `LiveState.candidates` found: per kind the nearest available responders with their
    roster rows (aligned), and the grid's own grid workers (any status) with theirs."""

    nearest: dict[str, list[tuple[Nearby, list[str | None]]]]
    grid_workers: list[tuple[str, list[str | None]]]


class LiveState:
    """Adapter over the Redis keys in `contracts.topics`. Takes a connected client."""

    def __init__(self, redis: Redis) -> None:
        self._r = redis
        self._position = redis.register_script(_with_kinds(_APPLY_POSITION))
        self._roster = redis.register_script(_with_kinds(_APPLY_ROSTER))
        self._status = redis.register_script(_with_kinds(_SET_STATUS))
        self._take_moved = redis.register_script(_TAKE_MOVED)
        self._nearest = redis.register_script(_NEAREST)
        self._candidates = redis.register_script(_CANDIDATES)

    async def mark_populated(self) -> None:
        """Live state holds the whole roster (after seeding or a rebuild from PostgreSQL)."""
        await self._r.set(topics.LIVE_EPOCH_KEY, str(time.time()), nx=True)  # since when: kept

    async def populated(self) -> bool:
        """False once Redis has lost its data (it keeps nothing across a restart)."""
        return bool(await self._r.exists(topics.LIVE_EPOCH_KEY))

    async def apply_roster(self, responder_id: str, fields: Mapping[str, Any]) -> None:
        """Roster fields from the registry: name, kind, org, skills, on_duty, grid_id."""
        keys, args = _roster_call(responder_id, fields)
        await self._roster(keys=keys, args=args)

    async def apply_rosters(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """`apply_roster` for many responders in one round trip (rebuilding a lost live state)."""
        if not entries:
            return
        pipe = self._r.pipeline(transaction=False)
        for responder_id, fields in entries:
            keys, args = _roster_call(responder_id, fields)
            await self._roster(keys=keys, args=args, client=pipe)
        await pipe.execute()

    async def apply_position(
        self, responder_id: str, lon: float, lat: float, at_ms: int, accuracy_m: float | None
    ) -> int:
        """1 applied, 0 older than what we hold, -1 unknown responder (no roster entry). A fix
        is never taken as newer than now: one dated ahead (a phone's clock) counts as of now, and
        a stored time ahead of now (dated in the future before this rule) is overwritten."""
        now_ms = int(time.time() * 1000)
        keys = [topics.responder_key(responder_id), topics.LIVE_MOVED_KEY, *_GEO_KEYS]
        args: list[str | int] = [
            responder_id,
            repr(lon),
            repr(lat),
            min(at_ms, now_ms),
            "" if accuracy_m is None else repr(accuracy_m),
            "1",
            now_ms + CLOCK_TOLERANCE_MS,
        ]
        return int(await self._position(keys=keys, args=args))

    async def apply_positions(
        self, fixes: Sequence[tuple[str, float, float, int, float | None]], *, moved: bool = True
    ) -> list[int]:
        """`apply_position` for many fixes (responder_id, lon, lat, at_ms, accuracy_m) in one
        round trip; the same answer for each. `moved=False` for fixes restored from PostgreSQL:
        the live keeper has nothing to copy back."""
        if not fixes:
            return []
        pipe = self._r.pipeline(transaction=False)
        now_ms = int(time.time() * 1000)
        for rid, lon, lat, at_ms, accuracy_m in fixes:
            args: list[str | int] = [
                rid,
                repr(lon),
                repr(lat),
                min(at_ms, now_ms),
                "" if accuracy_m is None else repr(accuracy_m),
                "1" if moved else "0",
                now_ms + CLOCK_TOLERANCE_MS,
            ]
            keys = [topics.responder_key(rid), topics.LIVE_MOVED_KEY, *_GEO_KEYS]
            await self._position(keys=keys, args=args, client=pipe)
        return [int(r) for r in await pipe.execute()]

    async def set_status(self, responder_id: str, status: str) -> bool:
        """Busy responders leave their kind's GEO set (nobody else is offered them); False if unknown."""
        keys = [topics.responder_key(responder_id), topics.LIVE_BUSY_KEY, *_GEO_KEYS]
        return int(await self._status(keys=keys, args=[responder_id, status])) == 1

    async def busy(self) -> set[str]:
        """Responders whose status is busy (kept by `set_status`)."""
        return {_s(m) for m in await self._r.smembers(topics.LIVE_BUSY_KEY)}

    async def take_moved(self) -> bool:
        """Set aside the responders whose position moved since the last copy, for
        `moved_to_copy`; False when none moved. A copy not marked done is offered again."""
        keys = [topics.LIVE_MOVED_KEY, topics.LIVE_COPYING_KEY]
        return int(await self._take_moved(keys=keys, args=[])) == 1

    async def moved_to_copy(self, chunk: int) -> AsyncIterator[list[str]]:
        """The responders set aside by `take_moved`, about `chunk` at a time."""
        batch: list[str] = []
        async for member in self._r.sscan_iter(topics.LIVE_COPYING_KEY, count=chunk):
            batch.append(_s(member))
            if len(batch) >= chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    async def copied_moved(self) -> None:
        """Every position set aside by `take_moved` is in PostgreSQL now."""
        await self._r.delete(topics.LIVE_COPYING_KEY)

    async def responder(self, responder_id: str) -> dict[str, str]:
        raw = await self._r.hgetall(topics.responder_key(responder_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def responders(self, ids: Iterable[str], fields: tuple[str, ...]) -> list[list[str | None]]:
        pipe = self._r.pipeline(transaction=False)
        for rid in ids:
            pipe.hmget(topics.responder_key(rid), list(fields))
        rows = await pipe.execute()
        return [[None if v is None else _s(v) for v in row] for row in rows]

    async def nearest(self, kind: str, lon: float, lat: float, radius_m: float, count: int) -> list[Nearby]:
        """Available responders of `kind`, nearest first (GEOSEARCH in growing circles, see
        `_NEAREST`), at most `count` and within `radius_m`."""
        rows: list[Any] = await self._nearest(
            keys=[topics.available_key(kind)], args=[lon, lat, count, *_search_radii(radius_m)]
        )
        return [Nearby(_s(r[0]), float(r[1]), float(r[2][0]), float(r[2][1])) for r in rows]

    async def candidates(
        self,
        kinds: Sequence[str],
        lon: float,
        lat: float,
        radius_m: float,
        count: int,
        grid_id: str | None,
        fields: Sequence[str],
    ) -> Candidates:
        """`nearest` for each kind and the grid's grid workers, each with the roster `fields`,
        in one script (one round trip)."""
        radii = _search_radii(radius_m)
        grid_key = topics.grid_workers_key(grid_id) if grid_id else topics.grid_workers_key("")
        raw: list[Any] = await self._candidates(
            keys=[*(topics.available_key(k) for k in kinds), grid_key],
            args=[lon, lat, count, len(radii), *radii, topics.RESPONDER_KEY, *fields],
        )

        def row(values: Sequence[Any]) -> list[str | None]:
            return [None if v is None else _s(v) for v in values]

        nearest = {
            kind: [
                (Nearby(_s(r[0]), float(r[1]), float(r[2][0]), float(r[2][1])), row(values))
                for r, values in zip(found, rows, strict=True)
            ]
            for kind, (found, rows) in zip(kinds, raw, strict=False)
        }
        ids, rows = raw[len(kinds)]
        workers = [(_s(i), row(v)) for i, v in zip(ids, rows, strict=True)] if grid_id else []
        return Candidates(nearest, workers)

    async def available_positions(self, kind: str) -> dict[str, tuple[float, float]]:
        """Every available responder of `kind` with its stored position (for checks and tools)."""
        ids = [_s(m) for m in await self._r.zrange(topics.available_key(kind), 0, -1)]
        if not ids:
            return {}
        coords = await self._r.geopos(topics.available_key(kind), *ids)
        return {i: (float(c[0]), float(c[1])) for i, c in zip(ids, coords, strict=True) if c is not None}

    async def grid_workers(self, grid_id: str) -> list[str]:
        """Grid workers responsible for `grid_id` (usually one)."""
        return sorted(_s(m) for m in await self._r.smembers(topics.grid_workers_key(grid_id)))

    async def put_camera(self, camera_id: str, name: str, lon: float, lat: float) -> None:
        await self._r.hset(topics.camera_key(camera_id), mapping={"name": name, "lon": lon, "lat": lat})

    async def camera(self, camera_id: str) -> tuple[str, float, float] | None:
        raw = await self._r.hmget(topics.camera_key(camera_id), ["name", "lon", "lat"])
        if raw[0] is None or raw[1] is None or raw[2] is None:
            return None
        return _s(raw[0]), float(raw[1]), float(raw[2])
