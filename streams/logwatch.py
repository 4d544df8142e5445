"""Notices a partition whose log restarted below what this worker already read.

A broker that comes back empty (Tansu keeps nothing; a Kafka cluster may lose an unreplicated
partition) starts each log again at offset 0. Faust remembers the offsets it has read and
skips every record at or below them, so a worker that lived through the loss would ignore
the new records until their offsets passed the old ones. When a partition's high-water mark
falls to or below an offset already seen, the worker must start afresh (the supervisor
restarts it; it then reads the new log from its beginning). Pure: fed offsets, asked.
"""

from __future__ import annotations

from collections.abc import Callable


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


__all__ = ["OffsetWatch"]
