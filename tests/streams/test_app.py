"""The Faust app: its consumers really use the configured fetch wait (Faust hard-codes 1,500 ms)."""

from __future__ import annotations

from infra.settings import Settings
from streams.app import build_app


async def test_worker_consumers_use_the_configured_fetch_wait(settings: Settings) -> None:
    app = build_app(
        Settings(kafka_bootstrap=settings.kafka_bootstrap, fetch_max_wait_ms=7, state_dir=settings.state_dir)
    )
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()


async def test_the_app_has_one_thin_agent_per_stage(settings: Settings) -> None:
    app = build_app(settings)
    assert set(app.agents) == {"normalise", "enrich", "positions", "roster"}
