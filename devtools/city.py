"""The demo street: communities, grids, cameras and responders, generated deterministically.

Pure and seeded, so every developer, test and CI run sees the same city, and seeding it into
PostgreSQL and Redis is repeatable. Grids are irregular quadrilaterals over one jittered vertex
lattice: neighbours share their corner vertices, so the grids tile the street with no gaps and
no overlaps (what `GridIndex.locate` relies on).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from contracts.geo import Grid, GridIndex
from contracts.kinds import ResponderKind

# The street's extent (南岸区, Chongqing), WGS-84 degrees.
MIN_LON: Final = 106.50
MAX_LON: Final = 106.58
MIN_LAT: Final = 29.60
MAX_LAT: Final = 29.66
COLS: Final = 20  # grids west to east
ROWS: Final = 15  # grids south to north
BLOCK_COLS: Final = 5  # a community is a block of BLOCK_COLS x BLOCK_ROWS grids
BLOCK_ROWS: Final = 5
JITTER: Final = 0.2  # of a cell; below 0.25 every quad stays convex and counter-clockwise

N_CAMERAS: Final = 600
N_POLICE: Final = 200
N_VOLUNTEERS: Final = 3000
OFF_DUTY_RATE: Final = 0.05
CONTRACT_CAMERA_ID: Final = "50010800001320000042"  # the intake contract's example camera

COMMUNITY_NAMES: Final = (
    "长生桥社区",
    "弹子石社区",
    "滨江社区",
    "龙门浩社区",
    "望江社区",
    "清晖社区",
    "南湖社区",
    "海棠溪社区",
    "铜元局社区",
    "上新街社区",
    "玄坛庙社区",
    "涂山社区",
)  # C06 清晖社区 holds the contract examples' points (清晖岸小区)
# Each police station covers one column of communities (west to east).
STATIONS: Final = ("弹子石派出所", "南坪派出所", "铜元局派出所", "龙门浩派出所")
TEAM_THEMES: Final = (
    "党员先锋",
    "平安巡防",
    "邻里守望",
    "应急救护",
    "银龄互助",
    "青年突击",
    "巾帼",
    "文明劝导",
)
THEME_SKILL: Final = {"平安巡防": "patrol", "应急救护": "first_aid", "银龄互助": "elderly_care"}
N_TEAMS: Final = 30
POLICE_SKILLS: Final = ("first_aid", "traffic", "mediation", "fire_safety")
VOLUNTEER_SKILLS: Final = ("first_aid", "fire_safety", "elderly_care", "mediation", "patrol", "cleanup")
GRID_WORKER_SKILLS: Final = ("inspection", "mediation", "elderly_care", "first_aid")

PLACES: Final = (
    "弹子石广场",
    "南滨路",
    "清晖岸小区",
    "龙门浩老街",
    "长嘉汇",
    "海棠溪码头",
    "铜元局轻轨站",
    "上新街菜市场",
    "涂山路",
    "南坪步行街",
    "玄坛庙小学",
    "望江大厦",
    "滨江公园",
    "长生桥农贸市场",
    "南湖小区",
    "社区卫生服务中心",
    "烟雨路",
    "万达广场",
    "腾龙大道",
    "学府大道",
)
CAMERA_SPOTS: Final = ("东口", "西口", "南口", "北口", "1号门", "2号门", "路口", "停车场", "公交站")
CAMERA_TYPES: Final = ("球机", "枪机", "半球")
SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋"
GIVEN: Final = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚华建国志红玉兵林亮成琳雪梅婷鑫宇浩然欣怡子涵"

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Community:
    community_id: str
    name: str


@dataclass(frozen=True, slots=True)
class CityGrid:
    """One grid: a counter-clockwise quadrilateral (closed ring, first point repeated)."""

    grid_id: str
    name: str
    community_id: str
    ring: tuple[Point, ...]

    @property
    def polygon(self) -> dict[str, object]:
        """A fresh GeoJSON Polygon (the dataclass itself stays immutable)."""
        return {"type": "Polygon", "coordinates": [[[lon, lat] for lon, lat in self.ring]]}

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        lons = [p[0] for p in self.ring]
        lats = [p[1] for p in self.ring]
        return min(lons), min(lats), max(lons), max(lats)


@dataclass(frozen=True, slots=True)
class Camera:
    camera_id: str
    name: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Responder:
    """Registry fields (DESIGN.md's responder contract) plus a current position."""

    responder_id: str
    name: str
    kind: ResponderKind
    org: str
    skills: tuple[str, ...]
    on_duty: bool
    grid_id: str | None
    lon: float
    lat: float

    def registry_fields(self) -> dict[str, object]:
        """The body of `PUT /api/v1/responders/{id}` and of `LiveState.apply_roster`."""
        return {
            "name": self.name,
            "kind": self.kind,
            "org": self.org,
            "skills": list(self.skills),
            "on_duty": self.on_duty,
            "grid_id": self.grid_id,
        }


@dataclass(frozen=True, slots=True)
class City:
    communities: tuple[Community, ...]
    grids: tuple[CityGrid, ...]
    cameras: tuple[Camera, ...]
    responders: tuple[Responder, ...]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return MIN_LON, MIN_LAT, MAX_LON, MAX_LAT

    def community_names(self) -> dict[str, str]:
        return {c.community_id: c.name for c in self.communities}

    def geo_grids(self) -> list[Grid]:
        """The grids as `contracts.geo.Grid`, exactly as a worker loads them from the registry."""
        names = self.community_names()
        return [
            Grid.from_geojson(g.grid_id, g.name, g.community_id, names[g.community_id], g.polygon)
            for g in self.grids
        ]

    def grid_index(self) -> GridIndex:
        return GridIndex(self.geo_grids())


def _lattice(rng: random.Random) -> list[list[Point]]:
    """Vertices [col][row]; interior ones jittered, boundary ones slide along the boundary only."""
    dx = (MAX_LON - MIN_LON) / COLS
    dy = (MAX_LAT - MIN_LAT) / ROWS
    verts: list[list[Point]] = []
    for i in range(COLS + 1):
        column: list[Point] = []
        for j in range(ROWS + 1):
            x = MIN_LON + i * dx
            y = MIN_LAT + j * dy
            if 0 < i < COLS:
                x += rng.uniform(-JITTER, JITTER) * dx
            if 0 < j < ROWS:
                y += rng.uniform(-JITTER, JITTER) * dy
            # Rounded once here, so neighbouring grids share bit-identical corners.
            column.append((round(x, 6), round(y, 6)))
        verts.append(column)
    return verts


def _point_in_quad(rng: random.Random, ring: tuple[Point, ...], margin: float = 0.1) -> Point:
    """A point strictly inside a convex quad (bilinear map of the inner unit square)."""
    u = rng.uniform(margin, 1 - margin)
    v = rng.uniform(margin, 1 - margin)
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ring[:4]  # SW, SE, NE, NW
    x = (1 - u) * (1 - v) * x0 + u * (1 - v) * x1 + u * v * x2 + (1 - u) * v * x3
    y = (1 - u) * (1 - v) * y0 + u * (1 - v) * y1 + u * v * y2 + (1 - u) * v * y3
    return round(x, 6), round(y, 6)


def _person_name(rng: random.Random) -> str:
    given = rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(SURNAMES) + given


def _skills(rng: random.Random, pool: tuple[str, ...], lo: int, hi: int) -> list[str]:
    return rng.sample(pool, rng.randint(lo, hi))


def _communities_and_grids(rng: random.Random) -> tuple[list[Community], list[CityGrid]]:
    verts = _lattice(rng)
    communities: list[Community] = []
    grids: list[CityGrid] = []
    blocks_x = COLS // BLOCK_COLS
    for c, name in enumerate(COMMUNITY_NAMES):
        community = Community(f"C{c + 1:02d}", name)
        communities.append(community)
        bx, by = c % blocks_x, c // blocks_x  # numbered west to east, then south to north
        n = 0
        for j in range(by * BLOCK_ROWS, (by + 1) * BLOCK_ROWS):
            for i in range(bx * BLOCK_COLS, (bx + 1) * BLOCK_COLS):
                n += 1
                sw, se, ne, nw = verts[i][j], verts[i + 1][j], verts[i + 1][j + 1], verts[i][j + 1]
                grid_id = f"G{len(grids) + 1:03d}"
                grids.append(
                    CityGrid(grid_id, f"{name}第{n}网格", community.community_id, (sw, se, ne, nw, sw))
                )
    return communities, grids


def _cameras(rng: random.Random) -> list[Camera]:
    # GB/T 28181 code: 500108 南岸区 + 00 + industry 00 + type 132 (IPC) + net 0 + serial.
    cameras = []
    for n in range(1, N_CAMERAS + 1):
        name = f"{rng.choice(PLACES)}{rng.choice(CAMERA_SPOTS)}-{rng.choice(CAMERA_TYPES)}"
        lon = round(rng.uniform(MIN_LON + 0.0005, MAX_LON - 0.0005), 6)
        lat = round(rng.uniform(MIN_LAT + 0.0005, MAX_LAT - 0.0005), 6)
        cameras.append(Camera(f"50010800001320{n:06d}", name, lon, lat))
    return cameras


def _responders(rng: random.Random, communities: list[Community], grids: list[CityGrid]) -> list[Responder]:
    by_community: dict[str, list[CityGrid]] = {}
    for g in grids:
        by_community.setdefault(g.community_id, []).append(g)
    blocks_x = COLS // BLOCK_COLS
    out: list[Responder] = []

    for n in range(1, N_POLICE + 1):
        s = (n - 1) % len(STATIONS)
        own = [c for k, c in enumerate(communities) if k % blocks_x == s]
        lon, lat = _point_in_quad(rng, rng.choice(by_community[rng.choice(own).community_id]).ring)
        skills = ["patrol", *_skills(rng, POLICE_SKILLS, 0, 2)]
        off = rng.random() < OFF_DUTY_RATE
        out.append(
            Responder(
                f"P-{n:04d}", _person_name(rng), "police", STATIONS[s], tuple(skills), not off, None, lon, lat
            )
        )

    names = {c.community_id: c.name for c in communities}
    for n, g in enumerate(grids, start=1):
        lon, lat = _point_in_quad(rng, g.ring, margin=0.25)
        skills = ["inspection", *_skills(rng, GRID_WORKER_SKILLS[1:], 0, 2)]
        off = rng.random() < OFF_DUTY_RATE
        out.append(
            Responder(
                f"G-{n:04d}",
                _person_name(rng),
                "grid_worker",
                names[g.community_id],
                tuple(skills),
                not off,
                g.grid_id,
                lon,
                lat,
            )
        )

    teams: list[tuple[str, str, str]] = []  # (team name, community id, theme)
    for t in range(N_TEAMS):
        community = communities[t % len(communities)]
        # Teams sharing a community get different themes (steps of 5 and 1 modulo 8).
        theme = TEAM_THEMES[(t * 5 + t // len(communities)) % len(TEAM_THEMES)]
        name = f"{community.name.removesuffix('社区')}{theme}志愿服务队"
        teams.append((name, community.community_id, theme))
    for n in range(1, N_VOLUNTEERS + 1):
        team, cid, theme = teams[(n - 1) % len(teams)]
        lon, lat = _point_in_quad(rng, rng.choice(by_community[cid]).ring)
        skills = _skills(rng, VOLUNTEER_SKILLS, 1, 2)
        extra = THEME_SKILL.get(theme)
        if extra and extra not in skills:
            skills.insert(0, extra)
        off = rng.random() < OFF_DUTY_RATE
        out.append(
            Responder(
                f"V-{n:05d}", _person_name(rng), "volunteer", team, tuple(skills), not off, None, lon, lat
            )
        )
    return out


def generate_city(seed: int = 2026) -> City:
    """The demo street for `seed`; the same seed always gives an equal City.

    Each part draws from its own generator, so changing how cameras are made does not move
    every responder.
    """
    communities, grids = _communities_and_grids(random.Random(f"{seed}:grids"))
    cameras = _cameras(random.Random(f"{seed}:cameras"))
    responders = _responders(random.Random(f"{seed}:responders"), communities, grids)
    assert any(c.camera_id == CONTRACT_CAMERA_ID for c in cameras)
    return City(tuple(communities), tuple(grids), tuple(cameras), tuple(responders))
