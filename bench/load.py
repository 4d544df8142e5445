"""Load drivers for the city-scale benchmark, each run in a process of its own.

The stack under test runs as its own processes (`bench_stack`); these drivers are more processes,
talking to it only through the public contracts: the HTTP intake, the registry, login, and the
WebSocket consoles and phones. Every time is `time.monotonic_ns()` (CLOCK_MONOTONIC, one clock
for every process on the machine), so a report stamped when one process sent it and a delta
stamped when another received it give a true latency.

A driver is an `async def` taking a `Control` (ready/stop events shared with the orchestrator)
plus plain keyword arguments, and returning picklable results. `spawn_driver` starts one.
It is long (some 530 lines) because every driver (report posters, consoles, phones, position
senders) lives beside the process plumbing they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing as mp
import random
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, Final

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.reports import CHANNELS, INTAKE_PATHS, build_report
from infra import eventloop

POSITION_SAMPLE: Final = 10  # positions of one responder in this many are timed (crc32 of the id)


def now_ns() -> int:
    return time.monotonic_ns()


def sampled(responder_id: str) -> bool:
    """The same responders are timed by the sender and by every console."""
    return zlib.crc32(responder_id.encode()) % POSITION_SAMPLE == 0


def at_ms(value: Any) -> int | None:
    """A fix's `at` as epoch milliseconds, from ISO-8601 text or a number (s or ms)."""
    if isinstance(value, int | float):
        return int(value if value > 1e11 else value * 1000)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where the stack listens (picklable, for the driver processes)."""

    http: str  # http://host:port
    ws: str  # ws://host:port
    keys: dict[str, str]  # intake API keys by role (camera, hotline, app, positions, admin)


@dataclass(slots=True)
class Control:
    ready_event: Event
    stop_event: Event

    def ready(self) -> None:
        self.ready_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    async def until_stopped(self, poll_s: float = 0.05) -> None:
        while not self.stop_event.is_set():  # noqa: ASYNC110 (a process-shared event, not asyncio's)
            await asyncio.sleep(poll_s)


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------------------------
# Processes


def _child(fn_path: str, kwargs: dict[str, Any], out: Queue[Any], ready: Event, stop: Event) -> None:
    module, name = fn_path.split(":")
    fn: Callable[..., Coroutine[Any, Any, Any]] = getattr(importlib.import_module(module), name)
    try:
        result = eventloop.run(fn(Control(ready, stop), **kwargs))
    except BaseException as exc:  # the orchestrator reports it; the driver must not hang it
        ready.set()
        out.put(("error", f"{fn_path}: {exc!r}\n{traceback.format_exc()}"))
        return
    out.put(("ok", result))


@dataclass(slots=True)
class Driver:
    name: str
    process: mp.process.BaseProcess
    out: Queue[Any]
    ready_event: Event
    stop_event: Event
    result: Any = None

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready_event.wait(timeout_s):
            raise RuntimeError(f"driver {self.name} was not ready within {timeout_s:.0f}s")

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout_s: float) -> Any:
        """The driver's result (raises with the driver's traceback if it failed)."""
        try:
            status, payload = self.out.get(timeout=timeout_s)
        except Exception as exc:
            self.process.kill()
            raise RuntimeError(f"driver {self.name} gave no result within {timeout_s:.0f}s") from exc
        self.process.join(10)
        if status != "ok":
            raise RuntimeError(f"driver {self.name} failed: {payload}")
        self.result = payload
        return payload


def spawn_driver(name: str, fn_path: str, **kwargs: Any) -> Driver:
    ctx = mp.get_context("spawn")
    out: Queue[Any] = ctx.Queue()
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_child, args=(fn_path, kwargs, out, ready, stop), name=name, daemon=True)
    proc.start()
    return Driver(name, proc, out, ready, stop)


# --------------------------------------------------------------------------------------------
# Reports over the HTTP intake


@dataclass(frozen=True, slots=True)
class Post:
    incident_id: str | None  # INC-<tracking_no> when answered 202
    t0_ns: int
    t1_ns: int
    status: int  # 0: no answer


async def post_reports(
    ctl: Control,
    target: Target,
    rate: float,
    duration_s: float,
    start_ns: int,
    run: str,
    part: int = 0,
    parts: int = 1,
    connections: int = 128,
) -> list[Post]:
    """Open-loop reports at `rate`/s (this process's share: every `parts`-th from `part`)."""
    rng = random.Random(f"{run}:{part}")
    total = int(rate * duration_s)
    mine = range(part, total, parts)
    bodies = [build_report(i, run, rng) for i in mine]
    ctl.ready()
    out: list[Post] = []
    conn = aiohttp.TCPConnector(limit=connections)
    # An answer later than 30 s counts as none: an overloaded stack shows as failures, and the
    # driver still ends in bounded time.
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(target.http, connector=conn, timeout=timeout) as http:

        async def one(channel: str, body: bytes) -> None:
            headers = {"X-Api-Key": target.keys[channel], "Content-Type": "application/json"}
            t0 = now_ns()
            try:
                async with http.post(INTAKE_PATHS[channel], data=body, headers=headers) as r:  # type: ignore[index]
                    payload = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                out.append(Post(None, t0, now_ns(), 0))
                return
            t1 = now_ns()
            iid = f"INC-{orjson.loads(payload)['tracking_no']}" if status == 202 else None
            out.append(Post(iid, t0, t1, status))

        tasks: list[asyncio.Task[None]] = []
        for k, (i, (channel, body)) in enumerate(zip(mine, bodies, strict=True)):
            if ctl.stopping:
                break
            await sleep_until(start_ns + int(i * 1e9 / rate))
            tasks.append(asyncio.create_task(one(channel, body)))
            if k % 512 == 0:
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
    return out


# --------------------------------------------------------------------------------------------
# Positions over the HTTP intake (AVL gateways and phone apps batch them)


async def post_positions(
    ctl: Control,
    target: Target,
    responders: list[tuple[str, float, float]],
    period_s: float,
    duration_s: float,
    start_ns: int,
    tick_s: float = 0.1,
) -> dict[str, Any]:
    """Every responder sends a fix every `period_s`, spread evenly over ticks; the sampled
    responders' fixes are returned as (responder_id, at_ms, sent_ns)."""
    ticks_per_period = max(1, round(period_s / tick_s))
    slots: list[list[int]] = [[] for _ in range(ticks_per_period)]
    for i in range(len(responders)):
        slots[i % ticks_per_period].append(i)
    where = [[lon, lat] for _, lon, lat in responders]
    rng = random.Random(7)
    sent: list[tuple[str, int, int]] = []
    failed = 0
    fixes = 0
    ctl.ready()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        target.http, connector=aiohttp.TCPConnector(limit=32), timeout=timeout
    ) as http:
        headers = {"X-Api-Key": target.keys["positions"], "Content-Type": "application/json"}

        async def batch(body: bytes, timed: list[tuple[str, int]], t0: int) -> None:
            nonlocal failed
            try:
                async with http.post("/api/v1/intake/positions", data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200 or r.status == 202
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                sent.extend((rid, ms, t0) for rid, ms in timed)
            else:
                failed += 1

        tasks: list[asyncio.Task[None]] = []
        tick = 0
        end_ns = start_ns + int(duration_s * 1e9)
        while not ctl.stopping:
            t_tick = start_ns + int(tick * tick_s * 1e9)
            if t_tick >= end_ns:
                break
            await sleep_until(t_tick)
            ms = int(time.time() * 1000)
            at = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
            idx = slots[tick % ticks_per_period]
            for lo in range(0, len(idx), 1000):
                chunk = idx[lo : lo + 1000]
                rows = []
                timed: list[tuple[str, int]] = []
                for i in chunk:
                    rid = responders[i][0]
                    p = where[i]
                    p[0] += rng.uniform(-0.0002, 0.0002)
                    p[1] += rng.uniform(-0.0002, 0.0002)
                    rows.append({"responder_id": rid, "lon": round(p[0], 6), "lat": round(p[1], 6), "at": at})
                    if sampled(rid):
                        timed.append((rid, ms))
                fixes += len(rows)
                t0 = now_ns()
                tasks.append(asyncio.create_task(batch(orjson.dumps({"positions": rows}), timed, t0)))
            tick += 1
            if tick % 50 == 0:
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
    return {"sent": sent, "failed_batches": failed, "fixes": fixes}


# --------------------------------------------------------------------------------------------
# Consoles and phones over WebSocket


async def login(http: aiohttp.ClientSession, username: str, password: str) -> str:
    async with http.post("/api/v1/auth/login", json={"username": username, "password": password}) as r:
        if r.status != 200:
            raise RuntimeError(f"login {username} answered {r.status}: {await r.text()}")
        return str((await r.json())["token"])


async def open_socket(target: Target, token: str, expect: str) -> ClientConnection:
    """An authenticated socket whose first frame after the ack was `expect` (snapshot, tasks)."""
    ws = await connect(target.ws, max_size=2**26, open_timeout=30, ping_interval=None)
    await ws.send(orjson.dumps({"type": "auth", "id": "bench", "token": token}).decode())
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "ack":
        await ws.close()
        raise RuntimeError(f"socket refused: {ack}")
    first = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
    if first.get("type") != expect:
        await ws.close()
        raise RuntimeError(f"expected {expect}, got {first.get('type')!r}")
    return ws


@dataclass(slots=True)
class ConsoleLog:
    """What one console saw: first arrival of each incident, arrival of each timed fix."""

    incidents: dict[str, int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    frames: int = 0
    bytes: int = 0
    closed: str = ""


async def read_console(ws: ClientConnection, log: ConsoleLog) -> None:
    try:
        async for raw in ws:
            t = now_ns()
            log.frames += 1
            log.bytes += len(raw)
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "delta":
                iid = (frame.get("incident") or {}).get("incident_id")
                if isinstance(iid, str) and iid not in log.incidents:
                    log.incidents[iid] = t
            elif kind == "positions":
                for fix in frame.get("positions") or []:
                    rid, ms = _fix_key(fix)
                    if rid is not None and ms is not None and sampled(rid):
                        log.positions.setdefault((rid, ms), t)
    except ConnectionClosed as exc:
        log.closed = f"{exc.rcvd.code if exc.rcvd else 'no close frame'}"


def _fix_key(fix: Any) -> tuple[str | None, int | None]:
    if isinstance(fix, list | tuple) and len(fix) >= 4:
        return str(fix[0]), at_ms(fix[3])
    if isinstance(fix, dict):
        return str(fix.get("responder_id")), at_ms(fix.get("at"))
    return None, None


async def watch_consoles(ctl: Control, target: Target, tokens: list[str]) -> list[ConsoleLog]:
    """A console per session token (each its own account), reading until told to stop."""
    logs = [ConsoleLog() for _ in tokens]
    sockets: list[ClientConnection] = []
    for token in tokens:
        sockets.append(await open_socket(target, token, "snapshot"))
    readers = [asyncio.create_task(read_console(ws, log)) for ws, log in zip(sockets, logs, strict=True)]
    ctl.ready()
    await ctl.until_stopped()
    for ws in sockets:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return logs


async def hold_phones(
    ctl: Control, target: Target, phones: list[tuple[str, str, float, float]], period_s: float = 5.0
) -> dict[str, Any]:
    """Responders' phones (id, token, lon, lat): connected, each sending its position every
    `period_s` over the socket as the phone page does, until told to stop."""
    sockets: list[ClientConnection] = []
    sem = asyncio.Semaphore(64)

    async def open_one(token: str) -> ClientConnection:
        async with sem:
            return await open_socket(target, token, "tasks")

    sockets = list(await asyncio.gather(*(open_one(tok) for _, tok, _, _ in phones)))
    frames = 0
    errors = 0

    async def drain(ws: ClientConnection) -> None:
        nonlocal frames, errors
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frames += 1
                if b'"error"' in (raw if isinstance(raw, bytes) else raw.encode()):
                    errors += 1

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    ctl.ready()
    n = len(sockets)
    k = 0
    rng = random.Random(3)
    start = now_ns()
    while not ctl.stopping and n:
        # phone k sends at start + (k mod n) * period / n + m * period
        await sleep_until(start + int(k * period_s * 1e9 / n))
        _, _, lon, lat = phones[k % n]
        frame = {
            "type": "position",
            "id": f"p{k}",
            "lon": round(lon + rng.uniform(-0.0005, 0.0005), 6),
            "lat": round(lat + rng.uniform(-0.0005, 0.0005), 6),
        }
        with contextlib.suppress(ConnectionClosed):
            await sockets[k % n].send(orjson.dumps(frame).decode())
        k += 1
    for ws in sockets:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {"connected": n, "positions_sent": k, "frames": frames, "errors": errors}


async def dispatch_to_phones(
    ctl: Control,
    target: Target,
    operator: tuple[str, str],
    phones: list[tuple[str, str]],
    rate: float,
    start_ns: int,
    duration_s: float,
) -> dict[str, Any]:
    """One operator dispatches new incidents, one click each, to bench responders whose phones
    are connected here. The responder's phone first reports a position at the incident (so they
    are the nearby responder an operator would pick); 0.5 s later the operator dispatches, and the
    offer's arrival on the phone is timed. Then the incident is cancelled (a false alarm) so the
    responder is free again."""
    async with aiohttp.ClientSession(target.http) as http:
        token = await login(http, *operator)
    console = await open_socket(target, token, "snapshot")
    sockets = {rid: await open_socket(target, tok, "tasks") for rid, tok in phones}
    fresh: deque[tuple[str, int, float, float]] = deque(maxlen=200)  # (incident, seen ns, lon, lat)
    seen: set[str] = set()
    sent: dict[str, tuple[int, str]] = {}  # incident id -> (sent ns, responder id)
    offers: list[tuple[int, int]] = []  # (sent ns, offer arrival ns)
    refused: list[str] = []
    free: deque[str] = deque(sockets)
    loop_errors: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def read_console() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in console:
                frame = orjson.loads(raw)
                if frame.get("type") == "delta":
                    inc = frame.get("incident") or {}
                    iid, loc = inc.get("incident_id"), inc.get("location") or {}
                    if (
                        isinstance(iid, str)
                        and iid not in seen
                        and inc.get("status") == "new"
                        and not inc.get("tasks")
                        and isinstance(loc.get("lon"), int | float)
                        and isinstance(loc.get("lat"), int | float)
                    ):
                        seen.add(iid)
                        fresh.append((iid, now_ns(), float(loc["lon"]), float(loc["lat"])))
                elif frame.get("type") == "error":
                    refused.append(f"{frame.get('code')}: {frame.get('message')}")

    async def read_phone(rid: str, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                t = now_ns()
                frame = orjson.loads(raw)
                if frame.get("type") != "task":
                    continue
                task = frame.get("task") or {}
                iid = task.get("incident_id")
                if frame.get("event") == "task.offer" and iid in sent and sent[iid][1] == rid:
                    offers.append((sent[iid][0], t))
                    cancel = {"type": "cancel", "id": f"x-{iid}", "incident_id": iid, "reason": "压测：误报"}
                    await console.send(orjson.dumps(cancel).decode())
                elif frame.get("event") in ("task.cancel", "task.expire", "task.decline"):
                    free.append(rid)

    async def click(iid: str, rid: str, lon: float, lat: float) -> None:
        ws = sockets[rid]
        await ws.send(orjson.dumps({"type": "position", "id": f"at-{iid}", "lon": lon, "lat": lat}).decode())
        await asyncio.sleep(0.5)
        cmd = {"type": "dispatch", "id": f"d-{iid}", "incident_id": iid, "responders": [rid]}
        sent[iid] = (now_ns(), rid)
        await console.send(orjson.dumps(cmd).decode())

    readers = [asyncio.create_task(read_console())]
    readers += [asyncio.create_task(read_phone(rid, ws)) for rid, ws in sockets.items()]
    ctl.ready()
    k = 0
    end_ns = start_ns + int(duration_s * 1e9)
    try:
        while not ctl.stopping:
            t_next = start_ns + int(k * 1e9 / rate)
            if t_next >= end_ns:
                break
            await sleep_until(t_next)
            k += 1
            # an incident filed at least 300 ms ago (past an automatic merge) and a free phone
            cutoff = now_ns() - 300_000_000
            while len(fresh) > 1 and fresh[1][1] <= cutoff:
                fresh.popleft()  # take the newest incident old enough
            if not fresh or fresh[0][1] > cutoff or not free:
                continue
            iid, _, lon, lat = fresh.popleft()
            task = asyncio.create_task(click(iid, free.popleft(), lon, lat))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.sleep(3.0)  # the last offers
    except Exception as exc:
        loop_errors.append(repr(exc))
    for ws in [console, *sockets.values()]:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    for r in [*readers, *pending]:
        r.cancel()
    await asyncio.gather(*readers, *pending, return_exceptions=True)
    return {"sent": len(sent), "offers": offers, "refused": refused[:20], "errors": loop_errors}


__all__ = ["CHANNELS", "Control", "Driver", "Post", "Target", "spawn_driver"]
