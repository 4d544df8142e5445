"""The benchmarks' harness (`bench.harness`), its cheap parts: the isolated settings a bench stack
runs on, the run's `Size`, reading a process's CPU and memory from /proc (`Proc`, `CpuWatch`),
finding a stack's processes by their environment, and the small records a run collects.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bench.city import FULL, QUICK
from bench.harness import (
    MACHINE,
    CpuWatch,
    Proc,
    Sent,
    Size,
    bench_settings,
    enriched_ns,
    machine_busy_s,
    postgres_cpu_s,
    stack_processes,
)
from infra.settings import Settings

NO_SUCH_PID = 4_194_305  # above the kernel's PID_MAX_LIMIT: never a process


def burn(cpu_s: float) -> None:
    """Spend `cpu_s` seconds of this thread's CPU."""
    until = time.thread_time() + cpu_s
    x = 0
    while time.thread_time() < until:
        x += 1


# --- bench_settings -------------------------------------------------------------------------


def test_bench_settings_are_a_stack_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", "postgresql://bench@db.example:6543/")
    monkeypatch.setenv("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    s = bench_settings(45_678, 3, dispatcher_lanes=2)
    demo = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:45678" and s.kafka_servers == ["127.0.0.1:45678"]
    assert s.topic_partitions == 3 and s.dispatcher_lanes == 2
    assert s.database_url == f"postgresql://bench@db.example:6543/centre_bench_{os.getpid()}"
    assert s.redis_url == "redis://127.0.0.1:6379/9"
    assert s.kafka_idempotence is False  # Tansu refuses idempotent producers
    # nothing shared with the demo centre: ports, consumer group, state folder
    assert s.faust_app_id == f"centre-bench-{os.getpid()}" != demo.faust_app_id
    assert s.state_dir == f"{demo.state_dir}/bench"
    ports = {s.http_port, s.ws_port, s.faust_web_port}
    assert not ports & {demo.http_port, demo.ws_port, demo.faust_web_port}
    assert all(1024 <= p <= 65535 for p in ports)


def test_bench_settings_default_to_the_local_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCH_REDIS_URL", raising=False)
    s = bench_settings(9999, 4)
    assert s.database_url == f"postgresql://postgres@127.0.0.1:5432/centre_bench_{os.getpid()}"
    assert s.redis_url == "redis://127.0.0.1:6379/13"  # not the demo's database 0
    assert s.redis_url != Settings().redis_url


# --- Size -------------------------------------------------------------------------------------


def test_the_full_size_is_the_issues() -> None:
    size = Size()
    assert (size.steady_rate, size.responders, size.position_period_s, size.consoles) == (200, 10_000, 5, 20)
    assert (size.fanout_phones, size.fanout_consoles, size.step_s, size.hold_s) == (5_000, 100, 15, 60)
    assert size.nearest_sizes == (1_000, 10_000, 100_000)
    assert (size.memory_responders, size.memory_incidents) == (100_000, 1_000_000)
    assert list(size.steps) == sorted(size.steps) and len(set(size.steps)) == len(size.steps)
    assert FULL == size
    with pytest.raises(dataclasses.FrozenInstanceError):
        size.steady_rate = 1  # type: ignore[misc]


def test_the_quick_size_is_nowhere_bigger_than_the_full_one() -> None:
    for f in dataclasses.fields(Size):
        quick, full = getattr(QUICK, f.name), getattr(FULL, f.name)
        if isinstance(full, tuple):
            assert quick and max(quick) <= max(full) and len(quick) <= len(full), f.name
            assert list(quick) == sorted(quick), f.name
        else:
            assert 0 < quick <= full, f.name


# --- Proc and CpuWatch ------------------------------------------------------------------------


def test_proc_reads_this_processs_cpu_and_memory() -> None:
    me = Proc("me", os.getpid())
    before, process_before = me.cpu_s(), time.process_time()
    assert abs(before - process_before) < 0.2  # the kernel's count is the one Python reports
    burn(0.3)
    used = me.cpu_s() - before
    assert 0.25 <= used <= 0.6, used
    with open(f"/proc/{os.getpid()}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert me.rss_mib() == pytest.approx(rss_kib / 1024, rel=0.2)
    assert 10 < me.rss_mib() < 4096


def test_a_process_that_is_gone_costs_nothing() -> None:
    gone = Proc("gone", NO_SUCH_PID)
    assert gone.cpu_s() == 0.0 and gone.rss_mib() == 0.0


def test_proc_reads_a_process_whose_name_has_parentheses_and_spaces() -> None:
    # /proc/<pid>/stat puts the name in parentheses; a name holding ") (" must not shift the fields
    code = (
        "import sys, time\n"
        "open('/proc/self/comm', 'w').write('a) b (c')\n"
        "until = time.thread_time() + 0.3\n"
        "while time.thread_time() < until: pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "a) b (c"
        proc = Proc("odd", child.pid)
        assert 0.25 <= proc.cpu_s() <= 1.5, proc.cpu_s()
        assert proc.rss_mib() > 1
    finally:
        child.kill()
        child.wait()


def test_cpu_watch_shares_a_span_between_the_stack_and_everything_else() -> None:
    watch = CpuWatch([Proc("me", os.getpid())])
    t_before = time.monotonic()
    watch.start()
    t_started = time.monotonic()
    burn(0.3)
    t_stopping = time.monotonic()
    watch.stop()
    t_after = time.monotonic()
    shares = watch.shares
    assert set(shares) == {"me", "postgres (all)", MACHINE, "load drivers and the rest"}
    # about 0.3 s of CPU over the span, as a share of one core
    assert shares["me"] * (t_after - t_before) >= 0.25
    assert shares["me"] * (t_stopping - t_started) <= 0.45
    assert shares["me"] <= 1.1
    # the machine was at least as busy as this process, and the rest is what the stack did not use
    assert shares[MACHINE] >= shares["me"] - 0.1
    stack = shares["me"] + shares["postgres (all)"]
    assert shares["load drivers and the rest"] == pytest.approx(max(shares[MACHINE] - stack, 0.0))


def test_cpu_watch_figures_are_percent_of_a_core_largest_first() -> None:
    watch = CpuWatch([])
    watch.shares = {"dispatcher": 0.25, MACHINE: 1.5, "console server": 0.004, "streams worker 7": 0.9}
    figures = watch.figures("steady")
    assert [f.name for f in figures] == [f"CPU {MACHINE}", "CPU streams worker 7", "CPU dispatcher"]
    assert [f.value for f in figures] == pytest.approx([150.0, 90.0, 25.0])
    assert all(f.scenario == "steady" and f.unit == "% core" and f.met is None for f in figures)
    cores = os.cpu_count() or 1
    assert figures[0].note == f"{cores} cores: {cores * 100} % is every core busy"
    assert figures[1].note == figures[2].note == ""


def test_machine_and_postgres_cpu_only_grow() -> None:
    busy, pg = machine_busy_s(), postgres_cpu_s()
    assert busy > 0 and pg >= 0
    burn(0.05)
    assert machine_busy_s() >= busy and postgres_cpu_s() >= pg


# --- stack_processes ----------------------------------------------------------------------------


@pytest.fixture
def fake_stack() -> Iterator[tuple[Settings, dict[str, int], int]]:
    """Sleeping processes dressed as a stack's: by command line and HTTP_PORT in their environment;
    and a decoy of another stack (another HTTP_PORT). Yields the settings, {name: pid}, decoy pid."""
    settings = bench_settings(47_111, 2)
    sleep = "import time; time.sleep(60)"
    ours = {"HTTP_PORT": str(settings.http_port)}
    theirs = {"HTTP_PORT": str(settings.http_port + 1)}
    specs = [
        ("worker-a", ["streams.worker"], ours),
        ("worker-b", ["streams.worker"], ours),
        ("dispatcher", ["dispatcher.main"], ours),
        ("console server", ["console.main"], ours),
        ("broker (Tansu)", ["tansu", "broker", "--listener-url", "tcp://127.0.0.1:47111"], theirs),
        ("decoy", ["dispatcher.main"], theirs),
    ]
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args, env in specs:
            children[name] = subprocess.Popen([sys.executable, "-c", sleep, *args], env={**os.environ, **env})
        # wait until each has exec'd (until then /proc shows this process's command line)
        deadline = time.monotonic() + 10
        for child, (_, args, _) in zip(children.values(), specs, strict=True):
            cmdline = Path(f"/proc/{child.pid}/cmdline")
            while args[0].encode() not in cmdline.read_bytes():
                assert time.monotonic() < deadline, "a child did not start"
                time.sleep(0.01)
        pids = {name: child.pid for name, child in children.items()}
        yield settings, pids, pids.pop("decoy")
    finally:
        for child in children.values():
            child.kill()
            child.wait()


def test_stack_processes_finds_the_stacks_own_processes_by_their_environment(
    fake_stack: tuple[Settings, dict[str, int], int],
) -> None:
    settings, pids, decoy = fake_stack
    found = stack_processes(settings)
    assert [p.name for p in found] == sorted(p.name for p in found)
    by_pid = {p.pid: p.name for p in found}
    assert by_pid[pids["worker-a"]] == f"streams worker {pids['worker-a']}"
    assert by_pid[pids["worker-b"]] == f"streams worker {pids['worker-b']}"
    assert by_pid[pids["dispatcher"]] == "dispatcher"
    assert by_pid[pids["console server"]] == "console server"
    assert by_pid[pids["broker (Tansu)"]] == "broker (Tansu)"
    assert decoy not in by_pid and os.getpid() not in by_pid
    # nothing else but Redis
    others = {name for pid, name in by_pid.items() if pid not in pids.values()}
    assert others <= {"redis-server"}
    assert all(isinstance(p, Proc) and Path(f"/proc/{p.pid}").exists() for p in found)


# --- records ----------------------------------------------------------------------------------


def test_a_sent_report_names_its_incident_only_once_accepted() -> None:
    assert Sent("app", 202, "A20260101-0000002A", 1.0, 1.1, 0).incident_id == "INC-A20260101-0000002A"
    assert Sent("camera", 503, None, 1.0, 1.1, 0, "busy").incident_id is None


def test_enriched_ns_reads_the_enrich_agents_stamp() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=8)))
    ns = int(at.timestamp() * 1e9)
    assert enriched_ns({"recommended": {"enriched_at": at.isoformat()}}) == ns
    naive = at.astimezone(UTC).replace(tzinfo=None).isoformat()  # a stamp without offset is UTC
    assert enriched_ns({"recommended": {"enriched_at": naive}}) == ns
    unstamped: list[dict[str, Any]] = [
        {},
        {"recommended": None},
        {"recommended": {}},
        {"recommended": {"enriched_at": 5}},
    ]
    for incident in unstamped:
        assert enriched_ns(incident) is None
    assert enriched_ns({"recommended": {"enriched_at": "yesterday"}}) is None
