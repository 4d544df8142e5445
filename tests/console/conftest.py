"""Fixtures for console tests that read and write the session's real broker (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka import make_producer, start_producer
from infra.kafka_admin import create_topics
from infra.settings import Settings


@pytest.fixture
async def feed_settings(settings: Settings) -> Settings:
    """The session's settings with every pipeline topic created, the way a console server runs."""
    s = replace(settings, kafka_idempotence=False)  # Tansu refuses idempotent producers
    await create_topics(s)
    return s


@pytest.fixture
async def feed_producer(feed_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A producer made the way the services make theirs."""
    prod = make_producer(feed_settings)
    await start_producer(prod)
    yield prod
    await prod.stop()
