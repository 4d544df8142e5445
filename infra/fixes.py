"""`positions.raw` records: one position fix keyed by its responder id, or a batch of fixes.

A phone's fix travels alone, keyed by its responder id. The HTTP position intake takes up to
1,000 fixes a request (gateways, AVL units) and sends one record per partition,
`{"positions": [fix, ...]}`, each fix in the record of the partition its responder id keys to
(the producer's own partitioner), so one responder's fixes stay on one partition whichever way
they came. A record per fix cost every consumer (Faust's per-event machinery above all) about
a third of a core per 1,000 fixes/s in the city benchmark; a batch costs them once.

A batch has no key of its own: order between fixes does not matter for correctness, because
live state ignores a fix older than the one it holds. A bad fix in a batch is refused on its
own (its index and the problem named), the rest are applied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from contracts.positions import PositionFix
from contracts.timewindow import HARD, TimeWindow
from contracts.validation import BadRecord, check_key, decode_object, kind_of, validated

BATCH_FIELD: Final = "positions"
MAX_FIXES: Final = 1000  # per record, as per intake request
_PARTITIONER: Final = DefaultPartitioner()


@dataclass(frozen=True, slots=True)
class BadFix:
    """A fix of a batch that cannot be used: why, and the fix itself (for its dead letter)."""

    reason: str
    value: bytes


def fix_value(fix: PositionFix) -> dict[str, Any]:
    """A fix as it travels (orjson writes `at` as ISO-8601 with its offset)."""
    return {
        "responder_id": fix.responder_id,
        "lon": fix.lon,
        "lat": fix.lat,
        "at": fix.at,
        "accuracy_m": fix.accuracy_m,
    }


def checked_fix(data: dict[str, Any], now: datetime, window: TimeWindow, prefix: str = "") -> PositionFix:
    """One fix, valid and dated within `window` of `now` (contracts.timewindow), or `BadRecord`."""
    fix: PositionFix = validated(PositionFix, data, prefix=prefix)
    problem = window.problem(fix.at, now)
    if problem is not None:
        raise BadRecord(f"{prefix}at: {problem}")
    return fix


def read_fixes(
    key: bytes | None, value: bytes | None, now: datetime, window: TimeWindow = HARD
) -> tuple[list[PositionFix], list[BadFix]]:
    """The fixes of one record, and the bad ones of a batch. A record that is unusable as a
    whole (not JSON, not an object, a lone fix invalid or wrongly keyed) raises `BadRecord`.
    A fix dated outside `window` of `now` is bad: one dated far ahead would be taken as the
    newest for ever."""
    data = decode_object(value)
    if BATCH_FIELD not in data or "responder_id" in data:
        fix = checked_fix(data, now, window)
        check_key(key, "responder_id", fix.responder_id)
        return [fix], []
    items = data[BATCH_FIELD]
    if not isinstance(items, list):
        raise BadRecord(f"{BATCH_FIELD}: not an array but {kind_of(items)}")
    if len(items) > MAX_FIXES:
        raise BadRecord(f"{BATCH_FIELD}: {len(items)} fixes (at most {MAX_FIXES})")
    good: list[PositionFix] = []
    bad: list[BadFix] = []
    for i, item in enumerate(items):
        raw = orjson.dumps(item)
        if not isinstance(item, dict):
            bad.append(BadFix(f"{BATCH_FIELD}.{i}: not a JSON object but {kind_of(item)}", raw))
            continue
        try:
            good.append(checked_fix(item, now, window, prefix=f"{BATCH_FIELD}.{i}."))
        except BadRecord as exc:
            bad.append(BadFix(str(exc), raw))
    return good, bad


def by_partition(fixes: Iterable[PositionFix], partitions: Sequence[int]) -> dict[int, list[PositionFix]]:
    """Fixes grouped by the partition their responder id keys to (as the producer would put a
    record keyed by it)."""
    ordered = sorted(partitions)
    out: dict[int, list[PositionFix]] = defaultdict(list)
    for fix in fixes:
        out[_PARTITIONER(fix.responder_id.encode(), ordered, ordered)].append(fix)
    return out


async def send_fixes(producer: AIOKafkaProducer, topic: str, fixes: Sequence[PositionFix]) -> list[Any]:
    """Hand the fixes to the producer: one alone keyed by its responder id, several as one batch
    per partition. Returns the sends' futures (the caller awaits their acknowledgement)."""
    if len(fixes) == 1:
        fix = fixes[0]
        return [await producer.send(topic, key=fix.responder_id.encode(), value=orjson.dumps(fix_value(fix)))]
    partitions = sorted(await producer.partitions_for(topic))
    return [
        await producer.send(
            topic,
            value=orjson.dumps({BATCH_FIELD: [fix_value(f) for f in chunk]}),
            partition=partition,
        )
        for partition, chunk in by_partition(fixes, partitions).items()
    ]
