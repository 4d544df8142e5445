"""The living demo city: `python -m devtools.simulator` (started by `./centre run`).
It is long (some 1,000 lines) because it is a whole cast sharing one configuration and one clock:
the reporters, an operator and every responder's phone, each a class of its own below.

It drives the centre only through its public edges, exactly as the outside world would:

- **Reports.** Camera alarms (cameras from the registry), 12345 hotline tickets and 随手拍 app
  reports through the real HTTP intake (demo `X-Api-Key`s), at random categories and points
  inside the city, with Chinese descriptions that fit the category and unique source ids.
- **An operator bot** (`SIM_AUTO_DISPATCH`): logs in as the demo operator, watches the console
  stream and, a few seconds after a new incident is filed (or a case is reopened), sends the
  one-click `dispatch`. A real operator who acts first wins; the bot then does nothing.
- **Simulated responders.** When the console shows an offer to a responder, the simulator logs
  in as that responder (username = responder id, the demo responder password), opens their
  phone socket and answers: accept (or sometimes decline with a reason); en route; travels at
  the kind's speed (`contracts.kinds.SPEED_M_PER_S`, compressed by `SIM_SPEEDUP`) posting
  positions through `POST /api/v1/intake/positions`; on scene; done with a note and a photo.
  Verification tasks are accepted, checked on scene and passed (or sometimes failed, which
  reopens the case). A responder's socket is closed once they have nothing left to do.
- **Idle responders walk**: a few hundred of them move a little, in batched position posts.

Settings (environment variables; HTTP and WebSocket addresses come from `infra.settings`):

    SIM_REPORTS_PER_MIN     6      reports a minute, all channels together (0: no reports;
                                   `./centre run` does not start the simulator at all then)
    SIM_AUTO_DISPATCH       1      the operator bot dispatches new and reopened incidents
    SIM_DISPATCH_DELAY_S    4      seconds the bot leaves a real operator to act first
    SIM_RESPONDERS          1      simulated responders answer offers (0: leave them to people)
    SIM_SPEEDUP             20     time compression of travel and on-scene work
    SIM_ACCEPT_RATE         0.85   share of response offers accepted (the rest are declined)
    SIM_VERIFY_PASS_RATE    0.9    share of verifications that pass
    SIM_MAX_SESSIONS        60     responder phones connected at once (further offers wait)
    SIM_WALKERS             300    idle responders that wander (0: none)
    SIM_WALK_INTERVAL_S     5      seconds between two walking steps (one batched post)
    SIM_POSITION_INTERVAL_S 1.5    seconds between two position posts of a travelling responder
    SIM_SEED                       random seed (default: a new one each run)

Every loop stops on SIGTERM or SIGINT; network errors are logged and retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from contracts.categories import CAMERA_ALARM_TYPES, CATEGORIES
from contracts.kinds import SPEED_M_PER_S
from contracts.states import ACTIVE_TASK_STATES
from devtools.city import MAX_LAT, MAX_LON, MIN_LAT, MIN_LON, PLACES, SURNAMES, generate_city
from devtools.seed import DEMO_API_KEYS, DEMO_RESPONDER_PASSWORD, DEMO_USERS
from infra.settings import Settings
from infra.wiring import setup_logging

log = logging.getLogger("simulator")

BEIJING: Final = timezone(timedelta(hours=8))
EARTH_M_PER_DEG: Final = 111_320.0
BBOX: Final = (MIN_LON, MIN_LAT, MAX_LON, MAX_LAT)
MARGIN_DEG: Final = 0.002  # keep generated points this far inside the street's edge
GONE_STATES: Final = frozenset({"closed", "cancelled", "merged"})
MAX_TRAVEL_S: Final = 600.0  # a travelling responder arrives after this long whatever happens

Source = Literal["camera", "hotline", "app"]
INTAKE_PATHS: Final[dict[str, str]] = {
    "camera": "/api/v1/intake/camera-alarms",
    "hotline": "/api/v1/intake/hotline-tickets",
    "app": "/api/v1/intake/app-reports",
}
SOURCE_WEIGHTS: Final[dict[Source, float]] = {"camera": 0.35, "hotline": 0.3, "app": 0.35}
NON_CAMERA_CATEGORIES: Final = tuple(CATEGORIES)

# What a resident or caller says about each category (the spot is added in front).
DESCRIPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "smoke_fire": ("楼道里冒出浓烟，闻到烧焦的味道", "路边垃圾堆着火了", "小区停车棚有明火"),
    "fight": ("有几个人在街上打架", "夜宵摊有人发生肢体冲突", "两伙人在广场推搡打斗"),
    "person_fallen": ("有位老人摔倒在路边起不来", "公交站有人晕倒了", "路口有人倒地不起"),
    "high_altitude_throwing": ("楼上有人往下扔东西，差点砸到人", "高楼掉下花盆", "阳台往下扔垃圾"),
    "crowd_gathering": ("很多人聚集在路口，堵住了通行", "商场门口人员聚集", "广场上人越来越多"),
    "intrusion": ("有人翻越围墙进入工地", "有人进入施工封闭区域", "陌生人翻进小区围栏"),
    "illegal_parking": ("车辆堵住了消防通道", "人行道上乱停车，行人无法通过", "小区门口车辆乱停"),
    "street_vending": ("人行道上摆摊占道经营", "流动摊贩堵住了路口", "夜市摊位占用盲道"),
    "garbage_overflow": ("垃圾桶满了，垃圾堆到地上", "垃圾好几天没人清运，臭味很大", "垃圾站溢出"),
    "gas_leak": ("楼道里有很浓的燃气味", "家里燃气管道漏气，闻到煤气味", "饭店后厨燃气泄漏"),
    "water_supply": ("整栋楼停水一天了", "水管爆裂，路面冒水", "自来水发黄浑浊"),
    "power_supply": ("小区突然停电", "电线杆上的电线冒火花", "整条街停电了"),
    "heating": ("家里暖气不热", "暖气管道漏水", "供暖一直没有恢复"),
    "sewage": ("下水道堵塞，污水漫到路面", "化粪池外溢，气味难闻", "雨水井往外冒污水"),
    "road_damage": ("路面塌陷出现大坑", "人行道地砖破损翘起", "井盖松动，车过有响声"),
    "streetlight": ("路灯不亮，晚上一片漆黑", "路灯一直闪烁", "路灯杆歪斜有倒塌危险"),
    "public_facility": ("公园健身器材损坏", "公交站座椅坏了", "护栏被撞坏了"),
    "cooking_fumes": ("楼下饭店油烟太大", "烧烤摊油烟熏到楼上住户", "餐馆排烟口正对居民窗户"),
    "noise": ("夜间施工噪声很大，影响休息", "广场舞音响声音太大", "楼上装修从早吵到晚"),
    "neighbour_dispute": ("邻居因为漏水发生争吵", "楼上楼下因噪声吵起来了", "邻居占用公共楼道引发纠纷"),
    "elderly_help": ("独居老人需要帮助，联系不上家属", "老人迷路了，说不清住址", "高龄老人行动不便需要上门"),
    "other": ("有流浪犬在小区游荡", "路边有不明物品", "共享单车堆放堵路"),
}
DONE_NOTES: Final[dict[str, tuple[str, ...]]] = {
    "fire": ("明火已扑灭，现场无人员受伤", "已排除险情，关闭气阀并通风"),
    "public_order": ("双方已被劝离，情绪平稳", "已调解，双方达成谅解"),
    "medical": ("已联系120并陪同就医", "已协助老人联系家属，安全送回"),
    "public_safety": ("已排查，现场已清理并设置警示", "已找到责任人并进行教育"),
    "traffic": ("车辆已挪走，通道恢复畅通", "已联系车主移车并张贴提示"),
    "city_appearance": ("摊贩已劝离，路面恢复整洁", "已劝导进入规定区域经营"),
    "sanitation": ("已清运完毕，现场已消毒", "已通知环卫清理，现场恢复"),
    "utilities": ("已通知维修单位，供应已恢复", "维修人员已到场处理完毕"),
    "public_facility": ("已报修并设置围挡，维修完成", "设施已修复"),
    "environment": ("已劝导整改，问题已解决", "已责令停止并登记备案"),
    "other": ("现场已处理完毕", "已妥善处置"),
}
DECLINE_REASONS: Final = (
    "正在处理另一起事件",
    "距离较远，建议改派",
    "身体不适，无法前往",
    "车辆故障",
    "正在值守重点部位",
    "下班交接中",
)
VERIFY_FAIL_REASONS: Final = ("问题仍然存在，需要再次处置", "现场整改不到位", "居民反映问题反复出现")
VERIFY_PASS_NOTES: Final = ("现场核查，问题已解决", "核查完毕，居民满意", "复核无异常")


# --- settings --------------------------------------------------------------------------------
def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SimConfig:
    """What the simulator does; `from_env` documents nothing new (see the module docstring)."""

    reports_per_min: float = 6.0
    auto_dispatch: bool = True
    dispatch_delay_s: float = 4.0
    responders: bool = True
    speedup: float = 20.0
    accept_rate: float = 0.85
    verify_pass_rate: float = 0.9
    max_sessions: int = 60
    walkers: int = 300
    walk_interval_s: float = 5.0
    position_interval_s: float = 1.5
    seed: int | None = None
    think_s: tuple[float, float] = (0.3, 1.0)  # before answering an offer (offers may expire in 3 s)
    work_s: tuple[float, float] = (120.0, 600.0)  # on scene, simulated seconds (divided by speedup)

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> SimConfig:
        e = os.environ if env is None else env
        seed = e.get("SIM_SEED", "").strip()
        return cls(
            reports_per_min=float(settings.sim_reports_per_min),
            auto_dispatch=_env_bool(e, "SIM_AUTO_DISPATCH", True),
            dispatch_delay_s=_env_float(e, "SIM_DISPATCH_DELAY_S", 4.0),
            responders=_env_bool(e, "SIM_RESPONDERS", True),
            speedup=max(0.1, _env_float(e, "SIM_SPEEDUP", 20.0)),
            accept_rate=min(1.0, max(0.0, _env_float(e, "SIM_ACCEPT_RATE", 0.85))),
            verify_pass_rate=min(1.0, max(0.0, _env_float(e, "SIM_VERIFY_PASS_RATE", 0.9))),
            max_sessions=max(1, int(_env_float(e, "SIM_MAX_SESSIONS", 60))),
            walkers=max(0, int(_env_float(e, "SIM_WALKERS", 300))),
            walk_interval_s=max(0.5, _env_float(e, "SIM_WALK_INTERVAL_S", 5.0)),
            position_interval_s=max(0.2, _env_float(e, "SIM_POSITION_INTERVAL_S", 1.5)),
            seed=int(seed) if seed else None,
        )


# --- pure parts: reports ---------------------------------------------------------------------
def now_beijing() -> datetime:
    return datetime.now(BEIJING).replace(microsecond=0)


def random_point(rng: random.Random, bbox: tuple[float, float, float, float] = BBOX) -> tuple[float, float]:
    min_lon, min_lat, max_lon, max_lat = bbox
    lon = rng.uniform(min_lon + MARGIN_DEG, max_lon - MARGIN_DEG)
    lat = rng.uniform(min_lat + MARGIN_DEG, max_lat - MARGIN_DEG)
    return round(lon, 6), round(lat, 6)


def time_limit_for(category: str) -> str:
    """The 12345 class a call-taker would give: risk to life or property is 2 h."""
    severity = CATEGORIES[category].severity
    return {1: "2h", 2: "2h", 3: "24h"}.get(severity, "7d")


def describe(rng: random.Random, category: str) -> str:
    return f"{rng.choice(PLACES)}附近，{rng.choice(DESCRIPTIONS[category])}"


def _phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randrange(10**9):09d}"


@dataclass
class ReportFactory:
    """Makes intake bodies; source ids are unique per factory (run id + counter)."""

    rng: random.Random
    cameras: Sequence[str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    bbox: tuple[float, float, float, float] = BBOX
    n: int = 0

    def _next_id(self, prefix: str) -> str:
        self.n += 1
        return f"SIM-{prefix}-{self.run_id}-{self.n:06d}"

    def pick_source(self) -> Source:
        sources: list[Source] = list(SOURCE_WEIGHTS)
        if not self.cameras:
            sources.remove("camera")
        weights = [SOURCE_WEIGHTS[s] for s in sources]
        return self.rng.choices(sources, weights)[0]

    def make(self, source: Source | None = None, at: datetime | None = None) -> tuple[Source, dict[str, Any]]:
        source = source or self.pick_source()
        at = at or now_beijing()
        if source == "camera":
            return source, self.camera_alarm(at)
        if source == "hotline":
            return source, self.hotline_ticket(at)
        return source, self.app_report(at)

    def camera_alarm(self, at: datetime) -> dict[str, Any]:
        if not self.cameras:
            raise ValueError("no cameras in the registry")
        alarm_id = self._next_id("CAM")
        n = self.n
        return {
            "alarm_id": alarm_id,
            "camera_id": self.rng.choice(self.cameras),
            "alarm_type": self.rng.choice(CAMERA_ALARM_TYPES),
            "confidence": round(self.rng.uniform(0.6, 0.99), 2),
            "occurred_at": at.isoformat(),
            "snapshot_url": f"http://video.example/snap/sim-{self.run_id}-{n}.jpg",
            "stream_url": f"rtsp://video.example/live/sim-{self.run_id}-{n}",
        }

    def hotline_ticket(self, at: datetime) -> dict[str, Any]:
        category = self.rng.choice(NON_CAMERA_CATEGORIES)
        lon, lat = random_point(self.rng, self.bbox)
        place = self.rng.choice(PLACES)
        return {
            "ticket_no": self._next_id("12345"),
            "received_at": at.isoformat(),
            "caller_phone": _phone(self.rng),
            "caller_name": f"{self.rng.choice(SURNAMES)}{self.rng.choice(('先生', '女士'))}",
            "category": category,
            "description": describe(self.rng, category),
            "address": f"{place}{self.rng.randint(1, 20)}号",
            "lon": lon,
            "lat": lat,
            "time_limit": time_limit_for(category),
        }

    def app_report(self, at: datetime) -> dict[str, Any]:
        category = self.rng.choice(NON_CAMERA_CATEGORIES)
        lon, lat = random_point(self.rng, self.bbox)
        report_id = self._next_id("SSP")
        return {
            "report_id": report_id,
            "reporter_id": f"resident-{self.rng.randint(1000, 99999)}",
            "reported_at": at.isoformat(),
            "category": category,
            "description": describe(self.rng, category),
            "lon": lon,
            "lat": lat,
            "photo_urls": [f"http://app.example/p/{report_id}.jpg"],
        }


# --- pure parts: movement --------------------------------------------------------------------
def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Equirectangular distance: exact enough within one street."""
    k = math.cos(math.radians((lat1 + lat2) / 2))
    dx = (lon2 - lon1) * EARTH_M_PER_DEG * k
    dy = (lat2 - lat1) * EARTH_M_PER_DEG
    return math.hypot(dx, dy)


def step_toward(
    lon: float, lat: float, target_lon: float, target_lat: float, speed_m_s: float, dt_s: float
) -> tuple[float, float, bool]:
    """Where one is after `dt_s` at `speed_m_s` toward the target; never past it.

    Returns (lon, lat, arrived).
    """
    left = distance_m(lon, lat, target_lon, target_lat)
    reach = max(0.0, speed_m_s * dt_s)
    if left <= reach or left < 1e-6:
        return target_lon, target_lat, True
    f = reach / left
    for _ in range(3):  # degrees are not metres: correct for the latitude's curvature
        moved = distance_m(lon, lat, lon + (target_lon - lon) * f, lat + (target_lat - lat) * f)
        if moved <= reach:
            break
        f *= reach / moved * (1 - 1e-12)
    return lon + (target_lon - lon) * f, lat + (target_lat - lat) * f, False


def offset_point(lon: float, lat: float, metres: float, bearing_rad: float) -> tuple[float, float]:
    k = max(0.01, math.cos(math.radians(lat)))
    return (
        lon + metres * math.sin(bearing_rad) / (EARTH_M_PER_DEG * k),
        lat + metres * math.cos(bearing_rad) / EARTH_M_PER_DEG,
    )


def clamp_to_bbox(
    lon: float, lat: float, bbox: tuple[float, float, float, float] = BBOX
) -> tuple[float, float]:
    min_lon, min_lat, max_lon, max_lat = bbox
    return min(max(lon, min_lon), max_lon), min(max(lat, min_lat), max_lat)


def walk_step(
    rng: random.Random, lon: float, lat: float, max_m: float, bbox: tuple[float, float, float, float] = BBOX
) -> tuple[float, float]:
    """A small random step, kept inside the street."""
    lon2, lat2 = offset_point(lon, lat, rng.uniform(0, max_m), rng.uniform(0, 2 * math.pi))
    lon2, lat2 = clamp_to_bbox(lon2, lat2, bbox)
    return round(lon2, 6), round(lat2, 6)


# --- pure parts: decisions -------------------------------------------------------------------
@dataclass(frozen=True)
class OfferAnswer:
    accept: bool
    reason: str | None = None


@dataclass(frozen=True)
class VerifyAnswer:
    passed: bool
    note: str
    reason: str | None = None


@dataclass
class Decider:
    """A responder's choices, from one seeded generator (deterministic in tests)."""

    rng: random.Random
    accept_rate: float = 0.85
    verify_pass_rate: float = 0.9

    def offer(self) -> OfferAnswer:
        if self.rng.random() < self.accept_rate:
            return OfferAnswer(True)
        return OfferAnswer(False, self.rng.choice(DECLINE_REASONS))

    def verification(self) -> VerifyAnswer:
        if self.rng.random() < self.verify_pass_rate:
            return VerifyAnswer(True, self.rng.choice(VERIFY_PASS_NOTES))
        reason = self.rng.choice(VERIFY_FAIL_REASONS)
        return VerifyAnswer(False, reason, reason)

    def done_note(self, category: str) -> str:
        family = CATEGORIES[category].family if category in CATEGORIES else "other"
        return self.rng.choice(DONE_NOTES.get(family, DONE_NOTES["other"]))


def photo_url(task_id: str) -> str:
    return f"http://sim.example/p/{task_id}.jpg"


# --- I/O helpers -----------------------------------------------------------------------------
class Backoff:
    def __init__(self, first: float = 0.5, most: float = 30.0) -> None:
        self.first, self.most, self.delay = first, most, first

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.most, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.first


class Unauthorised(Exception):
    """A login or a socket was refused for the credentials (not for the server being away)."""

    def __init__(self, message: str, no_account: bool = False) -> None:
        super().__init__(message)
        self.no_account = no_account  # 401: this id has no phone login (a normal registry state)


@dataclass
class SimStats:
    reports: int = 0
    report_errors: int = 0
    dispatches: int = 0
    sessions: int = 0
    accepted: int = 0
    declined: int = 0
    on_scene: int = 0
    done: int = 0
    verified_pass: int = 0
    verified_fail: int = 0
    positions: int = 0
    resolved_seen: set[str] = field(default_factory=set)
    closed_seen: set[str] = field(default_factory=set)


def _task_of(view: Mapping[str, Any], task_id: str) -> dict[str, Any] | None:
    for t in view.get("tasks") or ():
        if t.get("task_id") == task_id:
            return dict(t)
    return None


class Simulator:
    def __init__(
        self,
        settings: Settings,
        config: SimConfig,
        *,
        cameras: Sequence[str] | None = None,
        positions: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.settings, self.config = settings, config
        self.rng = random.Random(config.seed)
        self.stats = SimStats()
        self.base_url = f"http://{settings.http_host}:{settings.http_port}"
        self.ws_url = f"ws://{settings.http_host}:{settings.ws_port}"
        self._cameras = list(cameras) if cameras is not None else None
        self.positions: dict[str, tuple[float, float]] = dict(positions or {})
        self.views: dict[str, dict[str, Any]] = {}  # open incidents as the console shows them
        self.sessions: dict[str, ResponderSession] = {}
        self.tokens: dict[str, str] = {}
        self.no_phone: set[str] = set()  # responders without a phone login: not simulated
        self.devices: dict[str, str] = {}  # username -> device token (logins in their own lane)
        self.decider = Decider(random.Random(self.rng.random()), config.accept_rate, config.verify_pass_rate)
        self._dispatch_planned: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._console: ClientConnection | None = None
        self._cmd = 0
        self.stop = asyncio.Event()
        self.http: httpx.AsyncClient | None = None
        self._walkable: list[str] = []
        self.reports = ReportFactory(random.Random(self.rng.random()), list(cameras or ()))

    # --- lifecycle ---
    async def run(self, stop: asyncio.Event | None = None) -> SimStats:
        if stop is not None:
            self.stop = stop
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            self.http = http
            await self._load_city()
            loops: list[Coroutine[Any, Any, None]] = []
            if self.config.reports_per_min > 0:
                loops.append(self._reports_loop())
            if self.config.auto_dispatch or self.config.responders:
                loops.append(self._console_loop())
            if self.config.walkers > 0:
                loops.append(self._walk_loop())
            runners = [asyncio.create_task(loop) for loop in loops]
            log.info(
                "simulator running: %.1f reports/min, auto-dispatch %s, responders %s, speed-up x%g, "
                "%d walkers",
                self.config.reports_per_min,
                "on" if self.config.auto_dispatch else "off",
                "on" if self.config.responders else "off",
                self.config.speedup,
                self.config.walkers,
            )
            try:
                await self.stop.wait()
            finally:
                for t in [*runners, *self._tasks]:
                    t.cancel()
                for s in list(self.sessions.values()):
                    if s.runner is not None:
                        s.runner.cancel()
                pending = [*runners, *self._tasks, *(s.runner for s in self.sessions.values() if s.runner)]
                await asyncio.gather(*pending, return_exceptions=True)
                for s in list(self.sessions.values()):
                    await s.close()
                self.sessions.clear()
                self.http = None
        log.info("simulator stopped: %s", self.summary())
        return self.stats

    def summary(self) -> str:
        s = self.stats
        return (
            f"reports={s.reports} dispatches={s.dispatches} sessions={s.sessions} accepted={s.accepted} "
            f"declined={s.declined} done={s.done} verified={s.verified_pass}/{s.verified_fail} "
            f"positions={s.positions}"
        )

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", task.get_name(), task.exception())

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the simulator is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
        return self.stop.is_set()

    async def _load_city(self) -> None:
        need_positions = not self.positions
        if self._cameras is None:
            self._cameras = await self._cameras_from_db()
        if self._cameras is None or need_positions:
            city = await asyncio.to_thread(generate_city)
            if self._cameras is None:
                self._cameras = [c.camera_id for c in city.cameras]
                log.info("cameras from the generated demo city: %d", len(self._cameras))
            if need_positions:
                self.positions = {r.responder_id: (r.lon, r.lat) for r in city.responders if r.on_duty}
        self._walkable = sorted(self.positions)
        self.reports.cameras = self._cameras

    async def _cameras_from_db(self) -> list[str] | None:
        try:
            import asyncpg

            conn = await asyncio.wait_for(asyncpg.connect(self.settings.database_url), 10)
            try:
                rows = await conn.fetch("SELECT camera_id FROM cameras ORDER BY camera_id")
            finally:
                await conn.close()
        except Exception as exc:
            log.warning("could not read cameras from PostgreSQL (%r); using the generated city", exc)
            return None
        log.info("cameras from the registry: %d", len(rows))
        return [str(r["camera_id"]) for r in rows] or None

    # --- HTTP ---
    async def post(self, path: str, key: str, body: Mapping[str, Any], what: str, attempts: int = 4) -> bool:
        """POST with retries on network errors and 5xx; 4xx is logged and dropped."""
        assert self.http is not None
        backoff = Backoff()
        for attempt in range(1, attempts + 1):
            try:
                r = await self.http.post(path, json=body, headers={"X-Api-Key": key})
            except httpx.HTTPError as exc:
                problem = repr(exc)
            else:
                if r.status_code < 300:
                    return True
                if r.status_code < 500:
                    log.warning("%s refused: %d %s", what, r.status_code, r.text[:300])
                    return False
                problem = f"{r.status_code} {r.text[:200]}"
            log.warning("%s failed (attempt %d/%d): %s", what, attempt, attempts, problem)
            if attempt < attempts and await self.sleep(backoff.next()):
                return False
        return False

    async def login(self, username: str, password: str) -> str:
        """A session token (cached); raises on failure after retries."""
        if username in self.tokens:
            return self.tokens[username]
        assert self.http is not None
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                body = {"username": username, "password": password}
                if username in self.devices:  # like a phone that logged in before
                    body["device"] = self.devices[username]
                r = await self.http.post("/api/v1/auth/login", json=body)
            except httpx.HTTPError as exc:
                log.warning("login as %s failed: %r", username, exc)
            else:
                if r.status_code == 200:
                    token = str(r.json()["token"])
                    self.tokens[username] = token
                    self.devices[username] = str(r.json()["device_token"])
                    return token
                if r.status_code < 500:
                    raise Unauthorised(
                        f"login as {username}: {r.status_code} {r.text[:200]}",
                        no_account=r.status_code == 401,
                    )
                log.warning("login as %s failed: %d", username, r.status_code)
            await self.sleep(backoff.next())
        raise asyncio.CancelledError

    async def open_socket(self, username: str, password: str) -> tuple[ClientConnection, dict[str, Any]]:
        """Log in, open the socket, authenticate; returns it and the first frame after the ack."""
        for attempt in range(2):
            token = await self.login(username, password)
            ws = await connect(self.ws_url, max_size=2**25, open_timeout=10)
            try:
                await ws.send(orjson.dumps({"type": "auth", "id": "hello", "token": token}).decode())
                ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if ack.get("type") == "ack":
                    first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    return ws, first
            except BaseException:
                await ws.close()
                raise
            await ws.close()
            self.tokens.pop(username, None)  # expired session: log in again
            if attempt:
                raise Unauthorised(f"{username}: {ack}")
        raise Unauthorised(username)

    # --- reports ---
    async def _reports_loop(self) -> None:
        mean = 60.0 / self.config.reports_per_min
        while not await self.sleep(self.rng.expovariate(1.0 / mean)):
            source, body = self.reports.make()
            key = DEMO_API_KEYS[source]
            sid = body.get("alarm_id") or body.get("ticket_no") or body.get("report_id")
            if await self.post(INTAKE_PATHS[source], key, body, f"{source} report {sid}"):
                self.stats.reports += 1
                log.info("posted %s report %s (%s)", source, sid, body.get("category") or body["alarm_type"])
            else:
                self.stats.report_errors += 1

    # --- the operator console ---
    async def _console_loop(self) -> None:
        username, _, _, password = DEMO_USERS[0]
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                ws, first = await self.open_socket(username, password)
            except (OSError, WebSocketException, TimeoutError, Unauthorised, httpx.HTTPError) as exc:
                log.warning("console connection failed: %r; retrying", exc)
                if await self.sleep(backoff.next()):
                    return
                continue
            self._console = ws
            log.info("operator bot connected as %s", username)
            try:
                self._frame(first, initial=True)
                backoff.reset()
                async for raw in ws:
                    self._frame(orjson.loads(raw))
            except (ConnectionClosed, OSError) as exc:
                log.warning("console connection lost: %r; reconnecting", exc)
            finally:
                self._console = None
                await ws.close()
            if await self.sleep(backoff.next()):
                return

    def _frame(self, frame: dict[str, Any], initial: bool = False) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            self.views = {v["incident_id"]: v for v in frame.get("incidents", [])}
            for view in list(self.views.values()):
                self._on_view(view, None)
        elif kind == "delta":
            view, event = frame["incident"], frame["event"]
            iid = view["incident_id"]
            if view["status"] in GONE_STATES:
                self.views.pop(iid, None)
            else:
                self.views[iid] = view
            if view["status"] == "resolved":
                self.stats.resolved_seen.add(iid)
            if view["status"] == "closed":
                self.stats.closed_seen.add(iid)
            self._on_view(view, event)
            for s in self.sessions.values():
                s.wake.set()
        elif kind == "error" and frame.get("code") == "refused":
            log.info("command %s refused: %s", frame.get("id"), frame.get("message"))

    def _on_view(self, view: dict[str, Any], event: dict[str, Any] | None) -> None:
        iid, status = view["incident_id"], view["status"]
        if self.config.auto_dispatch and event is not None:
            fresh = status == "new" and event.get("type") == "incident.file"
            reopened = status == "reopened"
            key = (iid, int(view.get("round") or 0))
            if (fresh or reopened) and key not in self._dispatch_planned:
                self._dispatch_planned.add(key)
                self.spawn(self._dispatch_later(iid, status), f"dispatch-{iid}")
        if self.config.responders and status not in GONE_STATES:
            for t in view.get("tasks") or ():
                if t.get("state") == "offered":
                    self._offer_seen(str(t["responder_id"]), str(t["task_id"]))

    async def _dispatch_later(self, iid: str, status: str) -> None:
        if await self.sleep(self.config.dispatch_delay_s):
            return
        view = self.views.get(iid)
        if view is None or view["status"] != status:
            return  # a real operator (or the pipeline) got there first
        if await self.console_command("dispatch", incident_id=iid):
            self.stats.dispatches += 1
            log.info("operator bot dispatched %s (%s)", iid, view.get("category_label"))

    async def console_command(self, type_: str, **fields: Any) -> bool:
        ws = self._console
        if ws is None:
            return False
        self._cmd += 1
        cid = f"sim-{type_}-{uuid.uuid4().hex[:8]}-{self._cmd}"
        try:
            await ws.send(orjson.dumps({"type": type_, "id": cid, **fields}).decode())
        except (ConnectionClosed, OSError) as exc:
            log.warning("could not send %s: %r", type_, exc)
            return False
        return True

    # --- simulated responders ---
    def _offer_seen(self, rid: str, task_id: str) -> None:
        if rid in self.no_phone:
            return
        session = self.sessions.get(rid)
        if session is not None and not session.finished:
            session.add(task_id)
            return
        if session is not None:
            return  # closing; the next delta (or a re-offer) brings it back
        if len(self.sessions) >= self.config.max_sessions:
            log.debug("offer %s to %s waits: %d phones connected", task_id, rid, len(self.sessions))
            return
        session = ResponderSession(self, rid)
        session.add(task_id)
        self.sessions[rid] = session
        self.stats.sessions += 1
        session.runner = self.spawn(session.run(), f"responder-{rid}")

    def task_view(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for view in self.views.values():
            t = _task_of(view, task_id)
            if t is not None:
                return view, t
        return None

    async def post_positions(self, fixes: Iterable[tuple[str, float, float]]) -> None:
        at = datetime.now(UTC).isoformat()
        batch = [{"responder_id": rid, "lon": lon, "lat": lat, "at": at} for rid, lon, lat in fixes]
        for i in range(0, len(batch), 1000):
            part = batch[i : i + 1000]
            if await self.post(
                "/api/v1/intake/positions",
                DEMO_API_KEYS["positions"],
                {"positions": part},
                f"{len(part)} positions",
                attempts=2,
            ):
                self.stats.positions += len(part)

    def start_position(
        self, rid: str, view: Mapping[str, Any], task: Mapping[str, Any]
    ) -> tuple[float, float]:
        """Where a responder sets off from: where we last put them if that fits the offer's
        distance, else a point at the offered distance from the scene."""
        loc = view.get("location") or {}
        tlon, tlat = float(loc.get("lon", 0.0)), float(loc.get("lat", 0.0))
        quoted = float(task.get("distance_m") or 0.0)
        known = self.positions.get(rid)
        if known is not None:
            d = distance_m(known[0], known[1], tlon, tlat)
            if abs(d - quoted) <= 0.3 * quoted + 100:
                return known
        return offset_point(tlon, tlat, quoted, self.rng.uniform(0, 2 * math.pi))

    # --- walkers ---
    async def _walk_loop(self) -> None:
        if not self._walkable:
            return
        chosen = self.rng.sample(self._walkable, min(self.config.walkers, len(self._walkable)))
        # A walker moves at its kind's pace, a step of at most a few seconds' travel.
        while not await self.sleep(self.config.walk_interval_s):
            fixes = []
            for rid in chosen:
                if rid in self.sessions:
                    continue
                lon, lat = self.positions[rid]
                kind = {"P": "police", "G": "grid_worker"}.get(rid[:1], "volunteer")
                max_m = SPEED_M_PER_S[kind] * self.config.walk_interval_s * 0.5
                lon, lat = walk_step(self.rng, lon, lat, max_m)
                self.positions[rid] = (lon, lat)
                fixes.append((rid, lon, lat))
            if fixes:
                await self.post_positions(fixes)


class TaskGone(Exception):
    """The task left our hands (withdrawn, expired, cancelled, or the incident closed)."""


class ResponderSession:
    """One simulated responder's phone: a socket open while they have something to do."""

    GRACE_S: Final = 1.5  # stay connected this long after the last task (a check may follow)

    def __init__(self, sim: Simulator, rid: str) -> None:
        self.sim, self.rid = sim, rid
        self.queue: list[str] = []
        self.seen: set[str] = set()
        self.wake = asyncio.Event()
        self.finished = False
        self.runner: asyncio.Task[Any] | None = None
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.refused: dict[str, str] = {}  # our command id -> refusal message
        self.n = 0

    def add(self, task_id: str) -> None:
        if task_id not in self.seen:
            self.seen.add(task_id)
            self.queue.append(task_id)
            self.wake.set()

    async def run(self) -> None:
        try:
            ws, first = await self.sim.open_socket(self.rid, DEMO_RESPONDER_PASSWORD)
        except (OSError, WebSocketException, TimeoutError, Unauthorised, httpx.HTTPError) as exc:
            if isinstance(exc, Unauthorised) and exc.no_account:
                # A responder in the registry without a phone login (PUT /api/v1/responders
                # makes no account): their offers go unanswered and expire, as they would in
                # the field. Never tried again: repeated failures would only slow every login.
                self.sim.no_phone.add(self.rid)
                log.info("%s has no phone login; their offers are left to expire", self.rid)
            else:
                log.warning("%s could not connect: %r", self.rid, exc)
            self.finished = True
            self.sim.sessions.pop(self.rid, None)
            return
        self.ws = ws
        for t in first.get("tasks", []) if first.get("type") == "tasks" else []:
            if t.get("state") in ACTIVE_TASK_STATES:
                self.add(str(t["task_id"]))
        self.reader = asyncio.create_task(self._read())
        try:
            while not self.sim.stop.is_set():
                if not self.queue:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.GRACE_S)
                    if not self.queue:
                        break
                    continue
                task_id = self.queue.pop(0)
                try:
                    await self._handle(task_id)
                except TaskGone as exc:
                    log.info("%s: task %s ended: %s", self.rid, task_id, exc)
                except (ConnectionClosed, OSError) as exc:
                    log.warning("%s: connection lost: %r", self.rid, exc)
                    break
        finally:
            self.finished = True
            await self.close()
            if self.sim.sessions.get(self.rid) is self:
                del self.sim.sessions[self.rid]

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
            self.reader = None
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                if frame.get("type") == "task":
                    t = frame.get("task") or {}
                    if frame.get("event") == "task.offer" and t.get("task_id"):
                        self.add(str(t["task_id"]))
                elif frame.get("type") == "error":
                    self.refused[str(frame.get("id"))] = str(frame.get("message"))
                self.wake.set()

    def _current(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        found = self.sim.task_view(task_id)
        if found is None:
            raise TaskGone("incident no longer open")
        return found

    async def _wait_state(self, task_id: str, states: set[str], within_s: float = 10.0) -> dict[str, Any]:
        """Until the console shows the task in one of `states` (our command applied)."""
        deadline = time.monotonic() + within_s
        while True:
            _, t = self._current(task_id)
            if t["state"] in states:
                return t
            if t["state"] not in ACTIVE_TASK_STATES:
                raise TaskGone(f"task {t['state']}")
            left = deadline - time.monotonic()
            if left <= 0 or self.sim.stop.is_set():
                raise TaskGone(f"still {t['state']} after {within_s:.0f}s")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(left, 1.0))

    async def act(self, task_id: str, action: str, **extra: Any) -> None:
        if self.ws is None:
            raise TaskGone("not connected")
        self.n += 1
        cid = f"sim-{action}-{self.n}-{uuid.uuid4().hex[:6]}"
        await self.ws.send(
            orjson.dumps(
                {"type": "task", "id": cid, "task_id": task_id, "task_action": action, **extra}
            ).decode()
        )

    async def _step(self, task_id: str, action: str, expect: str, **extra: Any) -> dict[str, Any]:
        await self.act(task_id, action, **extra)
        return await self._wait_state(task_id, {expect})

    async def _pause(self, seconds: float) -> None:
        if await self.sim.sleep(seconds):
            raise TaskGone("simulator stopping")

    async def _handle(self, task_id: str) -> None:
        view, task = self._current(task_id)
        if task["responder_id"] != self.rid or task["state"] not in ACTIVE_TASK_STATES:
            return
        cfg, decider = self.sim.config, self.sim.decider
        if task["state"] == "offered":
            await self._pause(self.sim.rng.uniform(*cfg.think_s))
            if task["kind"] == "response":
                answer = decider.offer()
                if not answer.accept:
                    await self.act(task_id, "decline", reason=answer.reason)
                    self.sim.stats.declined += 1
                    log.info("%s declined %s (%s)", self.rid, task_id, answer.reason)
                    return
            await self._step(task_id, "accept", "accepted")
            self.sim.stats.accepted += 1
            log.info("%s accepted %s task %s on %s", self.rid, task["kind"], task_id, view["incident_id"])
        view, task = self._current(task_id)
        if task["kind"] == "verification":
            await self._verify(task_id, view, task)
        else:
            await self._respond(task_id, view, task)

    async def _respond(self, task_id: str, view: dict[str, Any], task: dict[str, Any]) -> None:
        cfg, sim = self.sim.config, self.sim
        if task["state"] == "accepted":
            await self._pause(0.3)
            task = await self._step(task_id, "en_route", "en_route")
        if task["state"] == "en_route":
            await self._travel(task_id, view, task)
            task = await self._step(task_id, "on_scene", "on_scene")
            sim.stats.on_scene += 1
        work = sim.rng.uniform(*cfg.work_s) / cfg.speedup
        await self._pause(work)
        self._current(task_id)  # still ours?
        note = sim.decider.done_note(str(view.get("category")))
        await self._step(task_id, "done", "done", note=note, photo_urls=[photo_url(task_id)])
        sim.stats.done += 1
        log.info("%s done with %s on %s: %s", self.rid, task_id, view["incident_id"], note)

    async def _travel(self, task_id: str, view: dict[str, Any], task: dict[str, Any]) -> None:
        cfg, sim = self.sim.config, self.sim
        loc = view.get("location") or {}
        tlon, tlat = float(loc["lon"]), float(loc["lat"])
        lon, lat = sim.start_position(self.rid, view, task)
        speed = SPEED_M_PER_S.get(str(task.get("responder_kind")), SPEED_M_PER_S["volunteer"]) * cfg.speedup
        started = time.monotonic()
        last = started
        arrived = False
        while not arrived:
            await self._pause(cfg.position_interval_s)
            self._current(task_id)
            now = time.monotonic()
            lon, lat, arrived = step_toward(lon, lat, tlon, tlat, speed, now - last)
            last = now
            if now - started > MAX_TRAVEL_S:
                lon, lat, arrived = tlon, tlat, True
            lon, lat = round(lon, 6), round(lat, 6)
            sim.positions[self.rid] = (lon, lat)
            await sim.post_positions([(self.rid, lon, lat)])

    async def _verify(self, task_id: str, view: dict[str, Any], task: dict[str, Any]) -> None:
        cfg, sim = self.sim.config, self.sim
        if task["state"] in ("accepted", "en_route"):
            await self._pause(sim.rng.uniform(60, 240) / cfg.speedup)
            await self._step(task_id, "on_scene", "on_scene")
        await self._pause(sim.rng.uniform(30, 120) / cfg.speedup)
        answer = sim.decider.verification()
        extra: dict[str, Any] = {"passed": answer.passed, "note": answer.note}
        if answer.reason:
            extra["reason"] = answer.reason
        await self.act(task_id, "done", **extra)
        if answer.passed:
            sim.stats.verified_pass += 1
        else:
            sim.stats.verified_fail += 1
        log.info(
            "%s verified %s: %s", self.rid, view["incident_id"], "passed" if answer.passed else answer.reason
        )


# --- entry point -----------------------------------------------------------------------------
async def amain(settings: Settings, config: SimConfig) -> None:
    sim = Simulator(settings, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sim.stop.set)
    await sim.run()


def main() -> None:
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings.from_env()
    config = SimConfig.from_env(settings)
    asyncio.run(amain(settings, config))


if __name__ == "__main__":
    main()


__all__ = [
    "Backoff",
    "Decider",
    "ReportFactory",
    "SimConfig",
    "Simulator",
    "step_toward",
]
