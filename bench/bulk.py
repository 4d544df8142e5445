"""Bulk loads for the city-scale scenarios: responders and a year of incidents, set-based.
It is long (some 500 lines) because each table's load is one statement with its own columns.

Posting a million reports through the intake would take hours and measure the intake, not
the scale; these loads write the rows the centre itself would have written, straight into
PostgreSQL with `INSERT ... SELECT generate_series` (a few statements, whatever the count):

* `load_responders`: N more responders in the registry, each with a phone login (users row,
  the demo's shared responder password) and a last known position (`responder_positions`,
  which is what the dispatcher's live keeper rebuilds Redis from);
* `load_incidents`: M stored incidents over the last year, nearly all closed, `open_count`
  still open (new, dispatched, in progress; the last two with an active task each, so those
  responders are busy). Each has one linked report (`reports` + `incident_reports`), its
  timeline (`incident_events`, one row per step of the state machine) and, once dispatched,
  a response task; the enriched record is a real one's shape and size.

Rows are generated with `random()` after `setseed`, so a load is repeatable. Open incidents get
no step clocks or timers: nothing fires on its own during a measurement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import orjson
from redis.asyncio import Redis

from contracts import topics
from contracts.categories import CAMERA_ALARM_TYPES, CATEGORIES
from contracts.incidents import EnrichedIncident, Location, Recommended
from devtools.city import GIVEN, STATIONS, SURNAMES, generate_city
from infra.livestate import LiveState

RESPONDER_PREFIX: Final = "R-"  # bulk responders: R-000001 ..; the demo's are P-, G-, V-
VOLUNTEER_SKILLS: Final = ("first_aid", "fire_safety", "elderly_care", "mediation", "patrol", "cleanup")
HOTLINE_LIMITS: Final = ("2h", "24h", "7d", "15d")
INCIDENT_TABLES: Final = ("incidents", "reports", "incident_reports", "incident_events", "tasks")
TABLES: Final = (
    "responders",
    "users",
    "responder_positions",
    "incidents",
    "reports",
    "incident_reports",
    "incident_events",
    "tasks",
)


@dataclass(slots=True)
class LoadTimes:
    """Seconds per step, in order, so a caller can print where a load's time went."""

    steps: dict[str, float] = field(default_factory=dict)

    async def timed(self, name: str, step: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        result = await step()
        self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - started
        return result

    @property
    def total(self) -> float:
        return sum(self.steps.values())


async def _session(conn: asyncpg.Connection, seed: float) -> None:
    # A load that is lost with a crash is simply run again: no need to wait for each flush.
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SELECT setseed($1)", seed)


async def copy_live_positions(conn: asyncpg.Connection, redis: Redis) -> int:
    """Positions held in Redis alone (the demo seed puts them there) into `responder_positions`,
    as the live keeper's copy would have, so a rebuild from PostgreSQL keeps them."""
    ids = [r["responder_id"] for r in await conn.fetch("SELECT responder_id FROM responders")]
    rows = await LiveState(redis).responders(ids, ("lon", "lat", "at_ms", "accuracy_m"))
    fixes = [
        (rid, float(lon), float(lat), int(float(at)), float(acc) if acc else None)
        for rid, (lon, lat, at, acc) in zip(ids, rows, strict=True)
        if lon is not None and lat is not None and at is not None
    ]
    if fixes:
        await conn.execute(
            """INSERT INTO responder_positions (responder_id, lon, lat, at_ms, accuracy_m)
               SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int8[], $5::float8[])
               ON CONFLICT (responder_id) DO NOTHING""",
            *(list(col) for col in zip(*fixes, strict=True)),
        )
    return len(fixes)


@contextlib.asynccontextmanager
async def indexes_deferred(
    conn: asyncpg.Connection, tables: tuple[str, ...], times: LoadTimes, step: str
) -> AsyncIterator[None]:
    """Drop the tables' keys, indexes and every foreign key touching them, then recreate them
    as they were once the block has loaded the rows (what pg_restore does): one sort per index
    and one join per foreign key instead of a million random inserts and lookups. The
    definitions are read from the catalogue, so they are exactly the migrations' own, and
    re-adding a key or foreign key checks every row loaded."""
    names = list(tables)
    foreign = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
             FROM pg_constraint
            WHERE contype = 'f' AND (conrelid = ANY($1::text[]::regclass[])
                                     OR confrelid = ANY($1::text[]::regclass[]))""",
        names,
    )
    keys = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
             FROM pg_constraint WHERE contype IN ('p', 'u') AND conrelid = ANY($1::text[]::regclass[])""",
        names,
    )
    indexes = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
             FROM pg_index i
            WHERE i.indrelid = ANY($1::text[]::regclass[])
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)""",
        names,
    )
    async with conn.transaction():
        for fk in foreign:
            await conn.execute(f'ALTER TABLE {fk["tbl"]} DROP CONSTRAINT "{fk["conname"]}"')
        for key in keys:
            await conn.execute(f'ALTER TABLE {key["tbl"]} DROP CONSTRAINT "{key["conname"]}"')
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['name']}")
    yield

    async def recreate() -> None:
        async with conn.transaction():
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for key in keys:
                await conn.execute(f'ALTER TABLE {key["tbl"]} ADD CONSTRAINT "{key["conname"]}" {key["def"]}')
            for index in indexes:
                await conn.execute(index["def"])
            for fk in foreign:
                await conn.execute(f'ALTER TABLE {fk["tbl"]} ADD CONSTRAINT "{fk["conname"]}" {fk["def"]}')

    await times.timed(step, recreate)


_GRIDS = """
CREATE TEMP TABLE IF NOT EXISTS bulk_grid AS
SELECT (row_number() OVER (ORDER BY g.grid_id) - 1)::int AS i, g.grid_id, g.name AS grid_name,
       g.community_id, c.name AS community_name, g.min_lon, g.min_lat, g.max_lon, g.max_lat
  FROM grids g JOIN communities c USING (community_id)"""

# $1 count, $2 id prefix, $3 surnames, $4 given names, $5 police stations, $6 volunteer skills.
# One in ten police, two grid workers, seven volunteers; 5 % off duty.
_RESPONDERS = """
CREATE TEMP TABLE bulk_responder AS
SELECT $2::text || lpad(n::text, 6, '0') AS responder_id,
       substr($3::text, 1 + (n * 7) % length($3::text), 1)
           || substr($4::text, 1 + (n * 13) % length($4::text), 1)
           || CASE WHEN n % 3 = 0 THEN ''
                   ELSE substr($4::text, 1 + (n * 29) % length($4::text), 1) END AS name,
       k.kind,
       CASE k.kind WHEN 'police' THEN ($5::text[])[1 + n % cardinality($5::text[])]
                   WHEN 'grid_worker' THEN g.community_name
                   ELSE g.community_name || '志愿服务队' END AS org,
       CASE k.kind WHEN 'police' THEN ARRAY['patrol']
                   WHEN 'grid_worker' THEN ARRAY['inspection']
                   ELSE ARRAY[($6::text[])[1 + n % cardinality($6::text[])]] END AS skills,
       random() >= 0.05 AS on_duty,
       CASE WHEN k.kind = 'grid_worker' THEN g.grid_id END AS grid_id,
       g.min_lon + (0.3 + 0.4 * random()) * (g.max_lon - g.min_lon) AS lon,
       g.min_lat + (0.3 + 0.4 * random()) * (g.max_lat - g.min_lat) AS lat
  FROM generate_series(1, $1::int) AS n
 CROSS JOIN LATERAL (SELECT CASE WHEN n % 10 = 0 THEN 'police'
                                 WHEN n % 10 IN (1, 2) THEN 'grid_worker'
                                 ELSE 'volunteer' END AS kind) k
  JOIN bulk_grid g ON g.i = (n::bigint * 7919) % (SELECT count(*) FROM bulk_grid)"""


async def load_responders(
    conn: asyncpg.Connection, count: int, times: LoadTimes, *, seed: float = 0.2026
) -> int:
    """`count` responders R-000001.. with a login and a last known position; returns `count`."""
    await _session(conn, seed)
    await conn.execute(_GRIDS)
    await conn.execute("DROP TABLE IF EXISTS bulk_responder")
    await times.timed(
        "responders: generate",
        lambda: conn.execute(
            _RESPONDERS, count, RESPONDER_PREFIX, SURNAMES, GIVEN, list(STATIONS), list(VOLUNTEER_SKILLS)
        ),
    )
    shared_hash = await conn.fetchval("SELECT password_hash FROM users WHERE role = 'responder' LIMIT 1")
    if shared_hash is None:
        raise RuntimeError("seed the demo city first: no responder account to share the password of")
    now_ms = int(time.time() * 1000)
    async with conn.transaction():
        await times.timed(
            "responders: registry",
            lambda: conn.execute(
                """INSERT INTO responders (responder_id, name, kind, org, skills, on_duty, grid_id)
                   SELECT responder_id, name, kind, org, skills, on_duty, grid_id FROM bulk_responder"""
            ),
        )
        await times.timed(
            "responders: logins",
            lambda: conn.execute(
                """INSERT INTO users (username, display_name, role, password_hash, responder_id)
                   SELECT responder_id, name, 'responder', $1, responder_id FROM bulk_responder""",
                shared_hash,
            ),
        )
        await times.timed(
            "responders: positions",
            lambda: conn.execute(
                """INSERT INTO responder_positions (responder_id, lon, lat, at_ms, accuracy_m)
                   SELECT responder_id, round(lon::numeric, 6), round(lat::numeric, 6),
                          $1 - (random() * 3600000)::bigint, round((3 + random() * 30)::numeric, 1)
                     FROM bulk_responder""",
                now_ms,
            ),
        )
    await conn.execute("DROP TABLE bulk_responder")
    return count


def record_template(nearest_per_kind: int = 5) -> dict[str, Any]:
    """An enriched record as the pipeline writes it (the nearest of each kind filled from the
    demo city), minus what each row sets: the shape and size of a real `incidents.record`."""
    city = generate_city()
    nearest: dict[str, list[Recommended]] = {}
    for kind in ("police", "grid_worker", "volunteer"):
        picks = [r for r in city.responders if r.kind == kind][:nearest_per_kind]
        nearest[kind] = [
            Recommended(
                responder_id=r.responder_id,
                name=r.name,
                kind=kind,
                org=r.org,
                distance_m=150.0 + 97.5 * i,
                eta_s=60 + 40 * i,
                own_grid=kind == "grid_worker" and i == 0,
            )
            for i, r in enumerate(picks)
        ]
    now = datetime.now(UTC)
    record = EnrichedIncident(
        incident_id="",
        tracking_no="",
        source="app",
        source_id="",
        category="other",
        category_label="其他",
        severity=4,
        title="",
        occurred_at=now,
        received_at=now,
        due_at=now,
        location=Location(lon=0.0, lat=0.0),
        nearest=nearest,
        own_grid_worker=nearest["grid_worker"][0] if nearest["grid_worker"] else None,
        enriched_at=now,
        enrichment_id="",
    )
    return record.model_dump(mode="json")


# The incidents to load, one row each, before they are written to the five tables.
# $1 count, $2 open count, $3 camera categories, $4 all categories, $5 labels (jsonb),
# $6 base severities (jsonb), $7 hotline time limits.
_INCIDENTS = """
CREATE TEMP TABLE bulk_incident AS
WITH base AS (
  SELECT n, n <= $2::int AS open,
         (ARRAY['camera', 'hotline', 'app'])[1 + n % 3] AS source,
         CASE WHEN n <= $2::int THEN now() - make_interval(secs => 3600 + random() * 3 * 86400)
              ELSE now() - make_interval(secs => 4 * 86400 + random() * 361 * 86400) END AS received_at,
         random() AS r1, random() AS r2, random() AS r3
    FROM generate_series(1, $1::int) AS n
), typed AS (
  SELECT b.*,
         CASE WHEN b.source = 'camera' THEN ($3::text[])[1 + (n / 3) % cardinality($3::text[])]
              ELSE ($4::text[])[1 + (n * 7) % cardinality($4::text[])] END AS category,
         ($7::text[])[1 + n % cardinality($7::text[])] AS time_limit,
         CASE WHEN open THEN (ARRAY['new', 'dispatched', 'in_progress'])[1 + n % 3]
              WHEN n % 50 = 0 THEN 'cancelled' ELSE 'closed' END AS status
    FROM base b
)
SELECT t.n, t.open, t.source, t.category, t.status, t.time_limit,
       CASE t.source WHEN 'camera' THEN 'C' WHEN 'hotline' THEN 'H' ELSE 'A' END
           || to_char(t.received_at AT TIME ZONE 'Asia/Shanghai', 'YYYYMMDD')
           || '-' || upper(lpad(to_hex(n), 8, '0')) AS tracking_no,
       'HIST-' || n AS source_id,
       ($5::jsonb) ->> t.category AS label,
       least(4, greatest(1, (($6::jsonb) ->> t.category)::int)) AS severity,
       t.received_at - make_interval(secs => 5 + t.r1 * 300) AS occurred_at,
       t.received_at,
       t.received_at + make_interval(secs => 30 + t.r1 * 270) AS dispatched_at,
       t.received_at + make_interval(secs => 60 + t.r1 * 500) AS accepted_at,
       t.received_at + make_interval(secs => 600 + t.r2 * 1800) AS started_at,
       t.received_at + make_interval(secs => 1800 + t.r2 * 7200) AS resolved_at,
       -- verified (and closed) after resolved, as the state machine writes them
       t.received_at + make_interval(secs => 2400 + t.r2 * 7200 + t.r3 * 86400) AS verified_at,
       t.received_at + make_interval(secs => 2460 + t.r2 * 7200 + t.r3 * 86400) AS closed_at,
       t.received_at + make_interval(secs => 120 + t.r1 * 600) AS cancelled_at,
       g.grid_id, g.grid_name, g.community_id, g.community_name,
       round((g.min_lon + (0.3 + 0.4 * t.r2) * (g.max_lon - g.min_lon))::numeric, 6)::float8 AS lon,
       round((g.min_lat + (0.3 + 0.4 * t.r3) * (g.max_lat - g.min_lat))::numeric, 6)::float8 AS lat,
       c.camera_id, c.name AS camera_name
  FROM typed t
  JOIN bulk_grid g ON g.i = (t.n::bigint * 104729) % (SELECT count(*) FROM bulk_grid)
  JOIN bulk_camera c ON c.i = t.n % (SELECT count(*) FROM bulk_camera)"""

_CAMERAS = """
CREATE TEMP TABLE IF NOT EXISTS bulk_camera AS
SELECT (row_number() OVER (ORDER BY camera_id) - 1)::int AS i, camera_id, name FROM cameras"""

_ROSTER = """
CREATE TEMP TABLE IF NOT EXISTS bulk_roster AS
SELECT (row_number() OVER (ORDER BY responder_id) - 1)::int AS i, responder_id, name, kind, org
  FROM responders"""

# $1 the record template (jsonb)
_INSERT_INCIDENTS = """
INSERT INTO incidents (incident_id, status, source, category, severity, title, description, address,
       lon, lat, grid_id, community_id, out_of_area, occurred_at, due_at, recommended, record, version,
       created_at, updated_at, round, family, dispatched_at, first_accepted_at, resolved_at, closed_at)
SELECT 'INC-' || tracking_no, status, source, category, severity, title, description, address,
       lon, lat, grid_id, community_id, false, occurred_at, due_at,
       jsonb_build_object('nearest', $1::jsonb -> 'nearest',
                          'own_grid_worker', $1::jsonb -> 'own_grid_worker'),
       $1::jsonb || jsonb_build_object(
           'incident_id', 'INC-' || tracking_no, 'tracking_no', tracking_no, 'source', source,
           'source_id', source_id, 'category', category, 'category_label', label, 'severity', severity,
           'title', title, 'description', description, 'occurred_at', occurred_at,
           'received_at', received_at, 'due_at', due_at,
           'location', jsonb_build_object('lon', lon, 'lat', lat, 'address', address, 'grid_id', grid_id,
               'grid_name', grid_name, 'community_id', community_id, 'community_name', community_name,
               'out_of_area', false,
               'camera_id', CASE WHEN source = 'camera' THEN camera_id END,
               'camera_name', CASE WHEN source = 'camera' THEN camera_name END),
           'camera_confidence', CASE WHEN source = 'camera' THEN 0.87 END,
           'snapshot_url', CASE WHEN source = 'camera' THEN 'http://video.example/snap/' || n || '.jpg' END,
           'stream_url', CASE WHEN source = 'camera' THEN 'rtsp://video.example/live/' || camera_id END,
           'photo_urls', CASE WHEN source = 'app'
                              THEN jsonb_build_array('http://app.example/p/' || n || '.jpg')
                              ELSE '[]'::jsonb END,
           'caller_phone', CASE WHEN source = 'hotline' THEN '138' || lpad((n % 100000000)::text, 8, '0') END,
           'caller_name', CASE WHEN source = 'hotline' THEN '王先生' END,
           'reporter_id', CASE WHEN source = 'app' THEN 'resident-' || (n % 50000) END,
           'time_limit', CASE WHEN source = 'hotline' THEN time_limit END,
           'enriched_at', received_at + interval '40 milliseconds',
           'enrichment_id', 'hist-' || n),
       version, received_at, updated_at, 0,
       NULL, dispatched_at_, accepted_at_, resolved_at_, closed_at_
  FROM (SELECT i.*,
               label || '：' || grid_name AS title,
               CASE source WHEN 'camera' THEN '' ELSE '历史工单：' || label END AS description,
               CASE WHEN source = 'hotline' THEN grid_name || '附近' END AS address,
               received_at + make_interval(secs => CASE time_limit WHEN '2h' THEN 7200 WHEN '24h' THEN 86400
                                                                   ELSE 604800 END) AS due_at,
               CASE status WHEN 'closed' THEN 6 WHEN 'cancelled' THEN 2 WHEN 'new' THEN 1
                           WHEN 'dispatched' THEN 2 ELSE 3 END AS version,
               CASE status WHEN 'closed' THEN closed_at WHEN 'cancelled' THEN cancelled_at
                           WHEN 'new' THEN received_at WHEN 'dispatched' THEN dispatched_at
                           ELSE started_at END AS updated_at,
               CASE WHEN status IN ('closed', 'dispatched', 'in_progress')
                    THEN dispatched_at END AS dispatched_at_,
               CASE WHEN status IN ('closed', 'dispatched', 'in_progress')
                    THEN accepted_at END AS accepted_at_,
               CASE WHEN status = 'closed' THEN resolved_at END AS resolved_at_,
               CASE WHEN status = 'closed' THEN closed_at END AS closed_at_
          FROM bulk_incident i) AS x"""

_INSERT_REPORTS = """
INSERT INTO reports (tracking_no, source, source_id, payload, received_at, published_at, incident_id,
       attempts)
SELECT tracking_no, source, source_id,
       CASE source
         WHEN 'camera' THEN jsonb_build_object('alarm_id', source_id, 'camera_id', camera_id,
             'alarm_type', category, 'confidence', 0.87, 'occurred_at', occurred_at,
             'snapshot_url', 'http://video.example/snap/' || n || '.jpg',
             'stream_url', 'rtsp://video.example/live/' || camera_id)
         WHEN 'hotline' THEN jsonb_build_object('ticket_no', source_id, 'received_at', received_at,
             'caller_phone', '138' || lpad((n % 100000000)::text, 8, '0'), 'caller_name', '王先生',
             'category', category, 'description', '历史工单：' || label, 'address', grid_name || '附近',
             'lon', lon, 'lat', lat, 'time_limit', time_limit)
         ELSE jsonb_build_object('report_id', source_id, 'reporter_id', 'resident-' || (n % 50000),
             'reported_at', received_at, 'category', category, 'description', '历史工单：' || label,
             'lon', lon, 'lat', lat, 'photo_urls', jsonb_build_array('http://app.example/p/' || n || '.jpg'))
       END,
       received_at, received_at + interval '5 milliseconds', 'INC-' || tracking_no, 1
  FROM bulk_incident"""

_INSERT_LINKS = """
INSERT INTO incident_reports (incident_id, tracking_no, linked_at)
SELECT 'INC-' || tracking_no, tracking_no, received_at + interval '60 milliseconds' FROM bulk_incident"""

# The timeline: the state machine's steps up to the incident's status (closed: all six;
# cancelled: filed then cancelled), numbered by version, public as PUBLIC_ACTIONS says.
_INSERT_EVENTS = """
INSERT INTO incident_events (event_id, incident_id, version, type, actor, at, public, data)
SELECT 'hist:' || i.n || ':' || s.version || '#0', 'INC-' || i.tracking_no, s.version,
       'incident.' || s.action,
       s.actor, s.at, s.action <> 'verify_pass', jsonb_build_object('state', s.state, 'reason', s.reason)
  FROM bulk_incident i
 CROSS JOIN LATERAL (VALUES
     (1, 'file', 'new', 'system:intake', i.received_at, NULL),
     (2, 'dispatch', 'dispatched', 'operator:duty', i.dispatched_at, NULL),
     (3, 'start', 'in_progress', 'responder', i.started_at, NULL),
     (4, 'resolve', 'resolved', 'responder', i.resolved_at, NULL),
     (5, 'verify_pass', 'verified', 'grid_worker', i.verified_at, NULL),
     (6, 'close', 'closed', 'system:dispatcher', i.closed_at, NULL),
     (2, 'cancel', 'cancelled', 'operator:duty', i.cancelled_at, '重复上报')
 ) AS s(version, action, state, actor, at, reason)
 WHERE CASE i.status
         WHEN 'closed' THEN s.action <> 'cancel'
         WHEN 'cancelled' THEN s.action IN ('file', 'cancel')
         WHEN 'new' THEN s.version = 1
         WHEN 'dispatched' THEN s.version <= 2 AND s.action <> 'cancel'
         ELSE s.version <= 3 AND s.action <> 'cancel' END"""

# One response task once dispatched: done when closed; accepted / on scene while open, each open
# one held by a different responder (one active task per responder).
_INSERT_TASKS = """
INSERT INTO tasks (task_id, incident_id, responder_id, responder_name, responder_kind, kind, state,
       version, org, round, reasons, distance_m, eta_s, note, offered_at, accepted_at, finished_at,
       updated_at)
SELECT 'hist:' || i.n || ':t1', 'INC-' || i.tracking_no, r.responder_id, r.name, r.kind, 'response',
       CASE i.status WHEN 'closed' THEN 'done' WHEN 'dispatched' THEN 'accepted' ELSE 'on_scene' END,
       CASE i.status WHEN 'closed' THEN 5 WHEN 'dispatched' THEN 2 ELSE 4 END,
       r.org, 0, ARRAY['nearest'], 150 + (i.n % 900), 60 + (i.n % 600),
       CASE WHEN i.status = 'closed' THEN '已处置完毕' END,
       i.dispatched_at, i.accepted_at, CASE WHEN i.status = 'closed' THEN i.resolved_at END,
       CASE i.status WHEN 'closed' THEN i.resolved_at WHEN 'dispatched' THEN i.accepted_at
                     ELSE i.started_at END
  FROM bulk_incident i
  JOIN bulk_roster r ON r.i = CASE WHEN i.open THEN i.n - 1
                                   ELSE (i.n::bigint * 7907) % (SELECT count(*) FROM bulk_roster) END
 WHERE i.status IN ('closed', 'dispatched', 'in_progress')"""


async def load_incidents(
    conn: asyncpg.Connection,
    count: int,
    open_count: int,
    times: LoadTimes,
    *,
    seed: float = 0.2027,
    nearest_per_kind: int = 5,
) -> int:
    """`count` incidents with their reports, links, timelines and tasks; returns `count`."""
    if not 0 <= open_count <= count:
        raise ValueError("open_count must lie between 0 and count")
    roster = int(await conn.fetchval("SELECT count(*) FROM responders"))
    if open_count > roster:
        raise ValueError(f"{open_count} open incidents need as many responders (have {roster})")
    await _session(conn, seed)
    for sql in (_GRIDS, _CAMERAS, "DROP TABLE IF EXISTS bulk_roster", _ROSTER):
        await conn.execute(sql)
    await conn.execute("DROP TABLE IF EXISTS bulk_incident")
    camera_codes = list(CAMERA_ALARM_TYPES)
    all_codes = sorted(CATEGORIES)
    labels = {c.code: c.label for c in CATEGORIES.values()}
    severities = {c.code: c.severity for c in CATEGORIES.values()}
    await times.timed(
        "incidents: generate",
        lambda: conn.execute(
            _INCIDENTS,
            count,
            open_count,
            camera_codes,
            all_codes,
            orjson.dumps(labels).decode(),
            orjson.dumps(severities).decode(),
            list(HOTLINE_LIMITS),
        ),
    )
    template = orjson.dumps(record_template(nearest_per_kind)).decode()
    async with indexes_deferred(conn, INCIDENT_TABLES, times, "incidents: keys, indexes, checks"):
        await times.timed("incidents: incidents", lambda: conn.execute(_INSERT_INCIDENTS, template))
        await times.timed("incidents: reports", lambda: conn.execute(_INSERT_REPORTS))
        await times.timed("incidents: report links", lambda: conn.execute(_INSERT_LINKS))
        await times.timed("incidents: timelines", lambda: conn.execute(_INSERT_EVENTS))
        await times.timed("incidents: tasks", lambda: conn.execute(_INSERT_TASKS))
    await conn.execute("DROP TABLE bulk_incident")
    return count


async def vacuum_analyze(conn: asyncpg.Connection, times: LoadTimes) -> None:
    """What autovacuum would get to eventually: planner statistics and visibility maps, so the
    measurement sees the steady state and no autovacuum worker runs in the middle of it."""
    for table in TABLES:
        await times.timed("vacuum analyze", lambda: conn.execute(f"VACUUM (ANALYZE) {table}"))  # noqa: B023


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}


async def forget_live_state(redis: Redis) -> None:
    """Redis as after a restart (it keeps nothing): the dispatcher's live keeper rebuilds it."""
    await redis.flushdb()
    assert not await redis.exists(topics.LIVE_EPOCH_KEY)


__all__ = [
    "LoadTimes",
    "copy_live_positions",
    "forget_live_state",
    "load_incidents",
    "load_responders",
    "record_template",
    "table_counts",
    "vacuum_analyze",
]
