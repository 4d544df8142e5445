"""Entry point of a streams worker: `python -m streams.worker`. Run several for more throughput."""

from __future__ import annotations

import logging
import sys

from infra.settings import Settings
from streams.app import build_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    app = build_app(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
