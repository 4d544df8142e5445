"""The reports the benchmarks post: one of each channel in turn (camera alarms from the demo
city's cameras, 12345 tickets, app reports), at random places in the demo street, each unique.
"""

from __future__ import annotations

import functools
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal

import orjson

from contracts.categories import CAMERA_ALARM_TYPES
from devtools.city import generate_city

# The demo city's box (WGS-84): every generated point falls inside a grid.
CITY_LON: Final = (106.50, 106.58)
CITY_LAT: Final = (29.60, 29.66)
BEIJING: Final = timezone(timedelta(hours=8))
Channel = Literal["camera", "hotline", "app"]
CHANNELS: Final[tuple[Channel, ...]] = ("camera", "hotline", "app")
INTAKE_PATHS: Final[dict[Channel, str]] = {
    "camera": "/api/v1/intake/camera-alarms",
    "hotline": "/api/v1/intake/hotline-tickets",
    "app": "/api/v1/intake/app-reports",
}
HOTLINE_CATEGORIES: Final = (
    ("cooking_fumes", "24h"),
    ("water_supply", "24h"),
    ("noise", "7d"),
    ("sewage", "24h"),
)
APP_CATEGORIES: Final = ("garbage_overflow", "road_damage", "streetlight", "illegal_parking", "noise")


def now_beijing() -> str:
    return datetime.now(BEIJING).isoformat(timespec="seconds")


@functools.cache
def camera_ids() -> tuple[str, ...]:
    """The demo city's cameras (in the registry of every bench stack)."""
    return tuple(c.camera_id for c in generate_city().cameras)


def build_report(i: int, run: str, rng: random.Random) -> tuple[Channel, bytes]:
    """Report number i of a run: channels round-robin, unique source ids, points in the city;
    camera alarms from cameras across the city (one camera raising every third report made
    one incident absorb thousands, nothing like a street's traffic)."""
    channel = CHANNELS[i % len(CHANNELS)]
    lon = round(rng.uniform(*CITY_LON), 6)
    lat = round(rng.uniform(*CITY_LAT), 6)
    body: dict[str, Any]
    if channel == "camera":
        body = {
            "alarm_id": f"CAM-BENCH-{run}-{i:05d}",
            "camera_id": rng.choice(camera_ids()),
            "alarm_type": CAMERA_ALARM_TYPES[(i // 3) % len(CAMERA_ALARM_TYPES)],
            "confidence": 0.87,
            "occurred_at": now_beijing(),
            "snapshot_url": f"http://video.example/snap/{i}.jpg",
            "stream_url": "rtsp://video.example/live/42",
        }
    elif channel == "hotline":
        category, limit = HOTLINE_CATEGORIES[(i // 3) % len(HOTLINE_CATEGORIES)]
        body = {
            "ticket_no": f"12345-BENCH-{run}-{i:05d}",
            "received_at": now_beijing(),
            "caller_phone": "13800138000",
            "caller_name": "李女士",
            "category": category,
            "description": "压测工单",
            "address": "清晖岸小区3栋",
            "lon": lon,
            "lat": lat,
            "time_limit": limit,
        }
    else:
        body = {
            "report_id": f"SSP-BENCH-{run}-{i:05d}",
            "reporter_id": "resident-1029",
            "reported_at": now_beijing(),
            "category": APP_CATEGORIES[(i // 3) % len(APP_CATEGORIES)],
            "description": "压测随手拍",
            "lon": lon,
            "lat": lat,
            "photo_urls": [f"http://app.example/p/{i}.jpg"],
        }
    return channel, orjson.dumps(body)
