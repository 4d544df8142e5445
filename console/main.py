"""Entry point of a console server: `python -m console.main` (HTTP + WebSocket).

The composition root: it wires the pool, Redis, the producer, the services, the HTTP app,
the WebSocket server, the incident-events consumer and the position feed, owns every
background task, and shuts them down in order on SIGINT/SIGTERM. Several console servers may
run side by side; each reads every incident event and every position (no consumer group) and
keeps its own board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import uvicorn
from aiokafka import AIOKafkaConsumer

from console.addresses import trusted_networks
from console.auth import ApiKeys, Sessions
from console.board import Board
from console.events import DeadLetters, feed
from console.http import ConsoleServices, create_http_app
from console.intake import IntakeService
from console.live import LiveHub, allowed_origins, serve_live
from console.positions import PositionFeed, start_positions_consumer
from console.registry import RegistryService
from console.resync import resync_board
from console.serving import http_config
from contracts import topics
from dispatcher.core.plan import load_plans
from dispatcher.readmodel import incidents
from dispatcher.readmodel.forces import live_recommendation
from infra import outbox, wiring
from infra.faults import BROKER_UNAVAILABLE, TRANSIENT
from infra.kafka import RestartedLogCheck, start_at_end, stop_on_signals
from infra.settings import Settings
from infra.wiring import open_database, open_live_state, open_producer

log = logging.getLogger("console")
RECONCILE_EVERY_S = 2.0
LOG_CHECK_S = 2.0  # how often the event feed checks the broker did not restart its logs
COMMAND_SEND_TIMEOUT_S = 5.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process's composition root owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def follow_events(
    consumer: AIOKafkaConsumer,
    publish: Callable[[dict[str, Any]], object],
    stopping: asyncio.Event,
    dead_letters: DeadLetters,
) -> None:
    """Feed every incident event to the hub, in partition order. An unusable one is
    dead-lettered with its reason (console/events.py) and the feed goes on."""
    check_logs = RestartedLogCheck(consumer, LOG_CHECK_S)
    while not stopping.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                reason = feed(record, publish)
                if reason is not None:
                    await dead_letters.send(record, reason)
        await check_logs()


async def start_events_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Assigned every partition and positioned at the end *before* the snapshot is read,
    so no event falls between the snapshot and the first delta."""
    return await start_at_end(settings, topics.INCIDENTS_EVENTS)


async def reconcile(intake: IntakeService, settings: Settings, stopping: asyncio.Event) -> None:
    """Publish again acknowledged reports not yet in an incident (see IntakeService.reconcile)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), RECONCILE_EVERY_S)
        if stopping.is_set():
            return
        try:
            n = await intake.reconcile(settings.redeliver_after_s, settings.redeliver_attempts)
            if n:
                log.warning("re-published %d acknowledged reports not yet in an incident", n)
        except TRANSIENT as exc:
            log.warning("reconciler: %r", exc)


async def amain(settings: Settings) -> None:
    stopping = asyncio.Event()
    stop_on_signals(stopping.set)
    pool = await open_database(settings)
    redis, live = open_live_state(settings)
    producer = await open_producer(settings)
    consumer = await start_events_consumer(settings)
    sessions = Sessions(pool, settings.session_ttl_s)
    board = Board()
    board.load([await incidents.full_view(pool, r) for r in await incidents.open_incident_rows(pool)])

    async def send_command(command: dict[str, Any]) -> None:
        """Into the outbox first (the dispatcher re-sends it until applied), then to the broker:
        an acknowledged command survives a broker that comes back empty."""
        message = outbox.command_message(command)
        await outbox.enqueue(pool, [message])  # durable from here on: the relay delivers it
        try:
            await asyncio.wait_for(
                producer.send_and_wait(message.topic, key=message.key.encode(), value=message.value),
                COMMAND_SEND_TIMEOUT_S,
            )
            await outbox.mark_sent(pool, [message.message_id])
        except (*BROKER_UNAVAILABLE, TimeoutError) as exc:
            log.warning("%s kept in the outbox, the broker is away: %r", message.message_id, exc)

    plans = load_plans(settings.plans_path or None)

    async def recommender(view: dict[str, Any]) -> dict[str, Any]:
        return await live_recommendation(live, plans, view, settings.nearest_radius_m)

    async def send_position(fix: dict[str, Any]) -> None:
        await producer.send_and_wait(
            topics.POSITIONS_RAW, key=fix["responder_id"].encode(), value=orjson.dumps(fix)
        )

    hub = LiveHub(
        board,
        sessions,
        send_command,
        recommender,
        send_position,
        trusted_proxies=trusted_networks(settings.trusted_proxies),
    )
    positions_consumer = await start_positions_consumer(settings)
    positions = PositionFeed(hub, settings.position_push_ms, window=settings.time_window)
    intake = IntakeService(pool, producer, window=settings.time_window)
    services = ConsoleServices(
        settings=settings,
        pool=pool,
        api_keys=ApiKeys(pool),
        sessions=sessions,
        intake=intake,
        registry=RegistryService(pool, producer, live),
        send_command=send_command,
        plans=plans,
        live=live,
    )
    http = _Server(http_config(create_http_app(services), settings))
    tasks: list[asyncio.Task[None]] = []
    async with serve_live(hub, settings.http_host, settings.ws_port, allowed_origins(settings)):
        tasks = [
            asyncio.create_task(http.serve(), name="http"),
            asyncio.create_task(
                follow_events(consumer, hub.publish, stopping, DeadLetters(producer)), name="events"
            ),
            asyncio.create_task(positions.run(positions_consumer, stopping), name="positions"),
            asyncio.create_task(hub.watch_sessions(stopping), name="sessions"),
            asyncio.create_task(reconcile(intake, settings, stopping), name="reconcile"),
            asyncio.create_task(
                resync_board(pool, board.version_of, hub.publish, settings.board_resync_s, stopping),
                name="board-resync",
            ),
        ]
        print(
            f"console: http://{settings.http_host}:{settings.http_port}/  ws: {settings.ws_url}", flush=True
        )
        done_task = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([done_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not done_task and t.exception() is not None:
                log.error("task %s failed: %r", t.get_name(), t.exception())
        stopping.set()
        http.should_exit = True
        for t in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        await hub.close_all()  # bounded: a peer that stopped reading cannot hold up the shutdown
        done_task.cancel()
    await intake.close()  # reports being recorded are answered before the producer stops
    await positions_consumer.stop()
    await consumer.stop()
    await producer.stop()
    await redis.aclose()
    await pool.close()


def main() -> None:
    wiring.run(amain)


if __name__ == "__main__":
    main()
