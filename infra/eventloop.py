"""Which event loop the services run on: uvloop where it is installed, asyncio's own otherwise.

Every service is network-bound Python (HTTP, WebSocket, Kafka, PostgreSQL and Redis clients);
uvloop's libuv-based loop and transports cost a fraction of asyncio's selector loop per socket
operation, which the city benchmark showed as the largest single item in every process
(`_SelectorSocketTransport.write`, `EpollSelector.select`). EVENT_LOOP=asyncio turns it off.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def use_uvloop() -> bool:
    if os.environ.get("EVENT_LOOP", "uvloop").lower() == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when `use_uvloop()`."""
    if use_uvloop():
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
