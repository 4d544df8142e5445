"""The local stack: `python -m devtools.stack prepare|up`.

`prepare` makes the stores and the broker ready: PostgreSQL and Redis started if they are
down (local URLs only), Tansu started if nothing listens at KAFKA_BOOTSTRAP, migrations
applied, topics created, the demo city seeded. `up` then runs the centre's processes
(streams workers, dispatcher, console server) under one supervisor until Ctrl-C, and stops
everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools.broker import port_open, split_hostport, start_tansu
from devtools.seed import DEMO_API_KEYS, DEMO_RESPONDER_PASSWORD, DEMO_USERS, seed_all
from infra.kafka_admin import create_topics
from infra.settings import ROOT, Settings

RESTART_BACKOFF_S = 2.0

LOCAL = {"127.0.0.1", "localhost", "::1", ""}


def _say(msg: str) -> None:
    print(f"[centre] {msg}", flush=True)


def ensure_postgres(settings: Settings) -> None:
    url = urlsplit(settings.database_url)
    host, port = url.hostname or "127.0.0.1", url.port or 5432
    if port_open(host, port) or host not in LOCAL:
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise SystemExit(f"PostgreSQL is not running at {host}:{port} and no local cluster is installed")
    _say(f"starting PostgreSQL {versions[-1]}")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True)
    _wait_port(host, port, "PostgreSQL")


def ensure_redis(settings: Settings) -> None:
    url = urlsplit(settings.redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if port_open(host, port) or host not in LOCAL:
        return
    if shutil.which("redis-server") is None:
        raise SystemExit(f"Redis is not running at {host}:{port} and redis-server is not installed")
    _say("starting Redis")
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    _wait_port(host, port, "Redis")


def ensure_broker(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start Tansu if nothing listens at the (loopback) bootstrap address."""
    host, port = split_hostport(settings.kafka_bootstrap)
    if port_open(host, port):
        return None
    if host not in LOCAL:
        raise SystemExit(f"Kafka is not reachable at {host}:{port}")
    _say(f"starting the Tansu broker on {host}:{port}")
    return start_tansu(host, port, Path(settings.state_dir) / "tansu.log")


def _wait_port(host: str, port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up on {host}:{port}")
        time.sleep(0.2)


def prepare(settings: Settings) -> subprocess.Popen[bytes] | None:
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    ensure_postgres(settings)
    ensure_redis(settings)
    broker = ensure_broker(settings)
    created = asyncio.run(create_topics(settings))
    if created:
        _say(f"created topics: {', '.join(created)}")
    _, redis_counts, seconds = asyncio.run(seed_all(settings))
    _say(
        f"demo city ready in {seconds:.1f}s: {redis_counts.get('responders', 0)} responders, "
        f"{redis_counts.get('cameras', 0)} cameras"
    )
    return broker


class Supervisor:
    """Runs the centre's processes; stops them all (and the broker it started) on exit."""

    def __init__(self, settings: Settings, workers: int, simulate: bool = False) -> None:
        self.settings = settings
        self.workers = workers
        self.simulate = simulate  # the demo city's simulator (./centre run; not the tests' stacks)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.specs: dict[str, tuple[str, dict[str, str]]] = {}  # name -> module, env (for restarts)
        self.logs = Path(settings.state_dir) / "logs"
        self.down: set[str] = set()  # killed on purpose and left down
        self.restarts: dict[str, int] = {}
        self._last_restart: dict[str, float] = {}

    def spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        self.procs = [(n, p) for n, p in self.procs if n != name]
        self.procs.append((name, proc))
        self.specs[name] = (module, env)

    def pid(self, name: str) -> int | None:
        """The pid of the running service `name`, or None when it is not running."""
        for n, proc in self.procs:
            if n == name and proc.poll() is None:
                return proc.pid
        return None

    def kill(self, name: str, keep_down: bool = False) -> int:
        """SIGKILL one service (fault drills): no graceful shutdown, no last commit. `watch`
        brings it back unless `keep_down` (a worker lost for good: the others take over).
        Returns the pid it killed, once that process is gone; a name with no running process
        is an error (a drill that killed nothing would prove nothing)."""
        victims = [proc for n, proc in self.procs if n == name and proc.poll() is None]
        if not victims:
            raise LookupError(f"no running service named {name!r}: {sorted(n for n, _ in self.procs)}")
        [proc] = victims
        proc.kill()
        proc.wait(10)
        if keep_down:
            self.down.add(name)
        return proc.pid

    def restart(self, name: str) -> None:
        module, env = self.specs[name]
        self.down.discard(name)
        self.spawn(name, module, env)
        self.restarts[name] = self.restarts.get(name, 0) + 1

    def watch(self) -> list[str]:
        """Restart every service that died (as systemd's Restart=always would), at most once
        every RESTART_BACKOFF_S per service; returns the names restarted."""
        now = time.monotonic()
        restarted = []
        for name, proc in list(self.procs):
            if proc.poll() is None or name in self.down:
                continue
            if now - self._last_restart.get(name, 0.0) < RESTART_BACKOFF_S:
                continue
            _say(f"{name} exited with {proc.returncode}; restarting it (see {self.logs / (name + '.log')})")
            self._last_restart[name] = now
            self.restart(name)
            restarted.append(name)
        return restarted

    def start(self) -> None:
        s = self.settings
        base = settings_env(s)
        for i in range(self.workers):
            self.spawn(
                f"streams-{i + 1}", "streams.worker", {**base, "FAUST_WEB_PORT": str(s.faust_web_port + i)}
            )
        self.spawn("dispatcher", "dispatcher.main", base)
        self.spawn("console", "console.main", base)
        if self.simulate and s.sim_reports_per_min > 0:
            self.spawn("simulator", "devtools.simulator", base)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        url = f"http://{self.settings.http_host}:{self.settings.http_port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"console did not become healthy; see {self.logs}")

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in time; killing it")
                proc.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(
    tag: str, bootstrap: str, database_base: str, redis_url: str, **overrides: Any
) -> Settings:
    """Settings for a throwaway centre beside the demo one (tests, benchmarks): its own database,
    Redis database, free ports, consumer group and state folder; Tansu refuses idempotent producers."""
    pid = os.getpid()
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "kafka_idempotence": False,
        "database_url": f"{database_base.rstrip('/')}/centre_{tag}_{pid}",
        "redis_url": redis_url,
        "http_port": free_port(),
        "ws_port": free_port(),
        "faust_web_port": free_port(),
        "faust_app_id": f"centre-{tag}-{pid}",
        "state_dir": f"{Settings().state_dir}/{tag}",
        **overrides,
    }
    return Settings(**values)


def settings_env(s: Settings) -> dict[str, str]:
    """The settings as environment variables, for child processes."""
    from dataclasses import fields

    return {f.metadata["env"]: str(getattr(s, f.name)) for f in fields(s)}


def up(settings: Settings, workers: int) -> None:
    broker = prepare(settings)
    sup = Supervisor(settings, workers, simulate=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        sup.start()
        sup.wait_healthy()
        _banner(settings)
        while not stop:
            sup.watch()
            if broker is not None and broker.poll() is not None:
                _say("the broker exited; starting it again (it comes back empty: topics re-created)")
                broker = ensure_broker(settings)
                asyncio.run(create_topics(settings))
            time.sleep(0.5)
    finally:
        _say("stopping")
        sup.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)


def _banner(s: Settings) -> None:
    base = f"http://{s.http_host}:{s.http_port}"
    users = "\n".join(f"      {u:<10} {pw:<22} ({role}, {name})" for u, name, role, pw in DEMO_USERS)
    keys = "\n".join(f"      {role:<10} {key}" for role, key in DEMO_API_KEYS.items())
    print(
        f"""
==================== 街道基层治理指挥中心 is running ====================
  Console:        {base}/
  Responder app:  {base}/responder   (phones; any responder id, password {DEMO_RESPONDER_PASSWORD})
  API docs:       {base}/docs   (OpenAPI: {base}/openapi.json)
  WebSocket:      {s.ws_url}
  Kafka:          {s.kafka_bootstrap}     logs: {Path(s.state_dir) / "logs"}
  Operator logins (username, password):
{users}
  Intake API keys (X-Api-Key):
{keys}
  Tail the pipeline:   .venv/bin/python -m streams.tail --all
  Stop:                Ctrl-C
==========================================================================""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["prepare", "up"])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("STREAMS_WORKERS", "2")))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "prepare":
        broker = prepare(settings)
        if broker is not None:
            _say(f"broker left running (pid {broker.pid})")
        return
    up(replace(settings), args.workers)


if __name__ == "__main__":
    main()
