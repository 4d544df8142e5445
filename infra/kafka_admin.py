"""Create the pipeline's topics (idempotent): enough partitions to run several workers."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contracts import topics
from infra.settings import Settings


async def create_topics(settings: Settings, names: tuple[str, ...] = topics.PIPELINE_TOPICS) -> list[str]:
    """Create any missing topic; returns the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            new = [NewTopic(n, settings.topic_partitions, settings.topic_replication) for n in missing]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        # Wait until metadata shows every topic (another process may have raced us).
        for _ in range(50):
            if set(names) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()


if __name__ == "__main__":
    created = asyncio.run(create_topics(Settings.from_env()))
    print("created:", ", ".join(created) or "nothing (all present)")
