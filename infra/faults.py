"""Which failures are the infrastructure being away (retry, or answer 503) rather than a bug.

One list for every process, so a restart of PostgreSQL, Redis or the broker is treated the
same way everywhere: intake refuses with Retry-After, consumers retry, nothing dead-letters.
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg
import redis.exceptions
from aiokafka.errors import KafkaError

DATABASE_UNAVAILABLE: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, recovering
    # A query on a connection the server is terminating at that moment: asyncpg's protocol is
    # left mid-operation ("cannot switch to state ..."), one time in four in a test.
    asyncpg.exceptions._base.InternalClientError,
)
CACHE_UNAVAILABLE: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
BROKER_UNAVAILABLE: Final = (KafkaError,)
TRANSIENT: Final = (*DATABASE_UNAVAILABLE, *CACHE_UNAVAILABLE, *BROKER_UNAVAILABLE)

__all__ = ["BROKER_UNAVAILABLE", "CACHE_UNAVAILABLE", "DATABASE_UNAVAILABLE", "TRANSIENT"]
