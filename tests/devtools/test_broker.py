"""The local Kafka-protocol broker (`devtools.broker`): Tansu started on a free port answers Kafka
clients and stops when told; a broker that exits or never listens is reported, not waited on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools import broker
from devtools.broker import broker_binary, port_open, split_hostport, start_tansu
from devtools.stack import free_port


def test_the_broker_binary_ships_with_the_environment() -> None:
    path = Path(broker_binary())
    assert path.is_file() and os.access(path, os.X_OK)


def test_port_open_tells_a_listening_port_from_a_closed_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not port_open("127.0.0.1", port)  # bound, not listening
        sock.listen()
        assert port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", port)


def test_split_hostport_takes_the_first_bootstrap_server() -> None:
    assert split_hostport("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert split_hostport(" kafka-1:19092 , kafka-2:19092") == ("kafka-1", 19092)
    assert split_hostport(":9093") == ("127.0.0.1", 9093)
    assert split_hostport("kafka:") == ("kafka", 9092)
    assert split_hostport("kafka") == ("kafka", 9092)  # a bare host, as Kafka clients take it


async def test_tansu_on_a_free_port_answers_kafka_clients_then_stops(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "logs" / f"tansu-{port}.log"
    started = time.monotonic()
    proc = start_tansu("127.0.0.1", port, log)
    try:
        assert proc.poll() is None and port_open("127.0.0.1", port)
        assert time.monotonic() - started < 20
        assert log.exists()  # its folder made, its output kept
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=10_000)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()  # a Kafka Metadata request
            assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", port)]
            topic = f"test.broker.{uuid.uuid4().hex[:8]}"
            await admin.create_topics([NewTopic(topic, 2, 1)])
            for _ in range(50):
                if topic in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
            [described] = await admin.describe_topics([topic])
            assert described["topic"] == topic and len(described["partitions"]) == 2
        finally:
            await admin.close()
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode is not None
    for _ in range(100):  # up to 5 s for the socket to close
        if not port_open("127.0.0.1", port):
            break
        await asyncio.sleep(0.05)
    assert not port_open("127.0.0.1", port)


def test_a_broker_that_exits_at_once_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "broker.sh"
    script.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setattr(broker, "broker_binary", lambda: str(script))
    log = tmp_path / "tansu.log"
    with pytest.raises(RuntimeError, match=f"tansu exited with 3; see {log}"):
        start_tansu("127.0.0.1", free_port(), log, wait_s=10)
    assert "cannot start" in log.read_text()


def test_a_broker_that_never_listens_is_stopped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    script = tmp_path / "broker.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    script.chmod(0o755)
    monkeypatch.setattr(broker, "broker_binary", lambda: str(script))
    port = free_port()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"tansu did not listen on 127.0.0.1:{port} within 0.5s"):
        start_tansu("127.0.0.1", port, tmp_path / "tansu.log", wait_s=0.5)
    assert time.monotonic() - started < 5
    # killed, not left running: gone, or a zombie waiting to be reaped
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the broker that never listened (pid {pid}) is still running")


def test_a_port_someone_else_holds_is_refused_not_taken_for_a_broker(tmp_path: Path) -> None:
    """Tansu exits at once on a port in use; the caller would then talk to whoever holds it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match="already in use"):
            start_tansu("127.0.0.1", port, tmp_path / "tansu.log")
    finally:
        holder.close()
