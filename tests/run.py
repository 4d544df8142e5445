"""`./centre test`: make sure PostgreSQL and Redis run, then run the whole suite with pytest.

The tests start their own broker (Tansu on a free port) and use their own databases.
"""

from __future__ import annotations

import sys

import pytest

from devtools.stack import ensure_postgres, ensure_redis
from infra.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    ensure_postgres(settings)
    ensure_redis(settings)
    return int(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
