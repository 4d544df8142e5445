"""Private PostgreSQL, Redis and Tansu servers for the fault drills.

The drills restart these, so each drill run owns its own: restarting the machine's shared
servers would cut every other test's (and the demo centre's) connections. Each can be
restarted the way an outage happens: PostgreSQL by an immediate (crash) shutdown, Redis and
Tansu empty, since neither keeps anything across a restart here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from devtools.broker import port_open, start_tansu
from devtools.stack import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin"))


def _wait(port: int, up: bool, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open("127.0.0.1", port) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} on port {port} did not {'start' if up else 'stop'} in {timeout}s")
        time.sleep(0.05)


class PrivatePostgres:
    """A throwaway cluster (initdb) on a free port, trust auth, no fsync (tests only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "postgres.log"
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        if not self.data.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if self._as_postgres:
                shutil.chown(self.root, "postgres")
                for parent in self.root.parents:  # the postgres user must reach its folder
                    if parent.stat().st_mode & 0o005 != 0o005:
                        parent.chmod(parent.stat().st_mode | 0o005)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        _wait(self.port, True, "PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        if port_open("127.0.0.1", self.port):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait(self.port, False, "PostgreSQL")

    def crash_restart(self, down_s: float) -> None:
        """Immediate shutdown (no checkpoint: crash recovery on start), down for `down_s`."""
        self.stop("immediate")
        time.sleep(down_s)
        self.start()

    def destroy(self) -> None:
        """Stopped and its data removed; its log stays for a post-mortem."""
        self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)


class PrivateRedis:
    """redis-server on a free port, keeping nothing on disk (like the machine's own)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "redis.log", "ab")
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait(self.port, True, "Redis")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        _wait(self.port, False, "Redis")

    def restart_empty(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class PrivateBroker:
    """Tansu on a free port; it keeps nothing across a restart (memory storage)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._proc = start_tansu("127.0.0.1", self.port, self.root / "tansu.log")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        _wait(self.port, False, "Tansu")

    def restart_empty(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
