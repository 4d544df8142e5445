"""Notices a partition whose log restarted below what this worker already read.

A broker that comes back empty (Tansu keeps nothing; a Kafka cluster may lose an unreplicated
partition) starts each log again at offset 0. Faust remembers the offsets it has read and
skips every record at or below them, so a worker that lived through the loss would ignore
the new records until their offsets passed the old ones. When a partition's high-water mark
falls to or below an offset already seen, the worker must start afresh (the supervisor
restarts it). A worker that starts afresh must not trust its group's committed offsets
either: one that lived through the loss may have committed its old positions to the new
broker, and Faust would skip everything below them. `beyond_log_end` finds those, and the
worker reads such partitions from their beginning instead. Pure: fed offsets, asked.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

P = TypeVar("P", bound=Hashable)


class OffsetWatch:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], int] = {}

    def saw(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset > self._seen.get(key, -1):
            self._seen[key] = offset

    def truncated(self, highwater: Callable[[str, int], int | None]) -> list[str]:
        """Partitions whose log now ends at or before an offset this worker has read."""
        out = []
        for (topic, partition), offset in sorted(self._seen.items()):
            hw = highwater(topic, partition)
            if hw is not None and hw <= offset:
                out.append(f"{topic}[{partition}] ends at {hw}, but offset {offset} was read")
        return out


def beyond_log_end(committed: Mapping[P, int | None], ends: Mapping[P, int]) -> list[P]:
    """Partitions whose committed offset lies past the end of their log: the log restarted."""
    return [
        tp
        for tp, offset in committed.items()
        if offset is not None and offset >= 0 and tp in ends and offset > ends[tp]
    ]


__all__ = ["OffsetWatch", "beyond_log_end"]
