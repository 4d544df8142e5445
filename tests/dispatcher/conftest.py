"""Fixtures of the dispatcher's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.db import rolled_back


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back afterwards."""
    async with rolled_back(pool) as c:
        yield c
