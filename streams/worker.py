"""Entry point of a streams worker: `python -m streams.worker`. Run several for more throughput."""

from __future__ import annotations

import asyncio
import sys

from infra.eventloop import use_uvloop
from infra.settings import Settings
from infra.wiring import setup_logging
from streams.app import build_app


def main() -> None:
    setup_logging()
    settings = Settings.from_env()
    if use_uvloop():
        # Before the app exists: Faust's main loop and its consumer thread's loop both come
        # from the policy (its --loop option comes too late, the app has made its loop by then).
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = build_app(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
