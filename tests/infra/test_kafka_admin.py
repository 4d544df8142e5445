"""Creating the pipeline's topics on the real broker: missing ones are created with the configured
partitions, present ones are left alone and not reported, and racing creators all succeed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from contracts import topics
from infra.kafka_admin import create_topics
from infra.settings import Settings


@pytest.fixture
async def meta(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of our own, to read what the broker holds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers)
    await admin.start()
    yield admin
    await admin.close()


async def partitions(admin: AIOKafkaAdminClient, topic: str) -> set[int]:
    [described] = await admin.describe_topics([topic])
    assert described["error_code"] == 0, described
    return {p["partition"] for p in described["partitions"]}


def fresh(n: int) -> tuple[str, ...]:
    tag = uuid.uuid4().hex[:8]
    return tuple(f"admin-test.{tag}.{i}" for i in range(n))


async def test_missing_topics_are_created_once_with_the_configured_partitions(
    settings: Settings, meta: AIOKafkaAdminClient
) -> None:
    names = fresh(3)
    assert await create_topics(settings, names) == list(names)
    for name in names:
        assert await partitions(meta, name) == set(range(settings.topic_partitions))
    assert await create_topics(settings, names) == []  # idempotent: nothing created the second time


async def test_only_missing_topics_are_created_and_reported(
    settings: Settings, meta: AIOKafkaAdminClient
) -> None:
    first, second, third = fresh(3)
    assert await create_topics(settings, (second,)) == [second]
    three = replace(settings, topic_partitions=3)  # what is present keeps its partitions
    assert await create_topics(three, (first, second, third)) == [first, third]
    assert await partitions(meta, second) == set(range(settings.topic_partitions))
    assert await partitions(meta, third) == {0, 1, 2}


async def test_racing_creators_all_succeed(settings: Settings, meta: AIOKafkaAdminClient) -> None:
    names = fresh(4)
    results = await asyncio.gather(*(create_topics(settings, names) for _ in range(3)))
    assert {n for created in results for n in created} == set(names)
    for name in names:
        assert await partitions(meta, name) == set(range(settings.topic_partitions))


async def test_by_default_every_pipeline_topic_is_created(
    settings: Settings, meta: AIOKafkaAdminClient
) -> None:
    created = await create_topics(settings)
    assert set(created) <= set(topics.PIPELINE_TOPICS)
    assert set(topics.PIPELINE_TOPICS) <= set(await meta.list_topics())
    assert await create_topics(settings) == []
