"""The incident vocabulary: categories, their families, Chinese labels and base severity.

Severity follows 分级响应: level 1 (I, most severe) to level 4 (IV). A family groups categories
that describe the same kind of event across channels (a camera's smoke alarm and a resident's
fire report), which is what merging duplicates keys on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    label: str  # shown to operators and residents
    family: str
    severity: int  # base severity, 1 (I) .. 4 (IV)
    camera: bool = False  # raised by 雪亮工程 video analytics


_CATEGORIES: Final = (
    # Video-analytics alarm types (also reportable by residents and callers).
    Category("smoke_fire", "烟火", "fire", 2, camera=True),
    Category("fight", "打架斗殴", "public_order", 2, camera=True),
    Category("person_fallen", "人员倒地", "medical", 2, camera=True),
    Category("high_altitude_throwing", "高空抛物", "public_safety", 2, camera=True),
    Category("crowd_gathering", "人员聚集", "public_order", 3, camera=True),
    Category("intrusion", "区域入侵", "public_safety", 3, camera=True),
    Category("illegal_parking", "违章停车", "traffic", 4, camera=True),
    Category("street_vending", "占道经营", "city_appearance", 4, camera=True),
    Category("garbage_overflow", "垃圾满溢", "sanitation", 4, camera=True),
    # Hotline and app categories.
    Category("gas_leak", "燃气泄漏", "fire", 1),
    Category("water_supply", "供水故障", "utilities", 3),
    Category("power_supply", "供电故障", "utilities", 3),
    Category("heating", "供暖问题", "utilities", 3),
    Category("sewage", "污水外溢", "sanitation", 3),
    Category("road_damage", "道路破损", "public_facility", 4),
    Category("streetlight", "路灯损坏", "public_facility", 4),
    Category("public_facility", "公共设施损坏", "public_facility", 4),
    Category("cooking_fumes", "餐饮油烟", "environment", 4),
    Category("noise", "噪声扰民", "environment", 4),
    Category("neighbour_dispute", "邻里纠纷", "public_order", 4),
    Category("elderly_help", "老人求助", "medical", 3),
    Category("other", "其他", "other", 4),
)

CATEGORIES: Final[dict[str, Category]] = {c.code: c for c in _CATEGORIES}
CAMERA_ALARM_TYPES: Final = tuple(c.code for c in _CATEGORIES if c.camera)
SEVERITY_LABELS: Final = {1: "I级", 2: "II级", 3: "III级", 4: "IV级"}

# 12345 time-limit classes (接诉即办): risk to life or property, utilities, general, complex.
HOTLINE_TIME_LIMITS: Final[dict[str, timedelta]] = {
    "2h": timedelta(hours=2),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "15d": timedelta(days=15),
}
_TIME_LIMIT_SEVERITY: Final = {"2h": 2, "24h": 3, "7d": 4, "15d": 4}

# Camera alarms are answered in minutes; app reports default to the general class.
CAMERA_RESPONSE_LIMIT: Final = timedelta(minutes=15)
APP_RESPONSE_LIMIT: Final = timedelta(hours=24)


def severity_for(category: str, *, confidence: float | None = None, time_limit: str | None = None) -> int:
    """Severity from the category, sharpened by what the source says about urgency.

    A very confident camera alarm of a severe kind goes up one level; a hotline ticket
    classed 2 h (risk to life or property) is at least level II whatever its category.
    """
    level = CATEGORIES[category].severity
    if confidence is not None and confidence >= 0.9 and level <= 2:
        level -= 1
    if time_limit is not None:
        level = min(level, _TIME_LIMIT_SEVERITY[time_limit])
    return max(1, min(4, level))
