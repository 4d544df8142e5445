"""The local stack's helpers (`devtools.stack`): the settings handed to child processes as their
environment (every field, and back unchanged), free ports, and the isolated settings a test or
benchmark centre runs on beside the demo one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from devtools.broker import port_open
from devtools.stack import free_port, isolated_settings, settings_env
from infra.settings import ROOT, Settings


def changed(value: object, name: str) -> Any:
    """A value of the same type as `value` and different from it (still a valid setting)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.25
    assert isinstance(value, str), name
    return f"{value}-{name}-ü x"


def everything_changed() -> Settings:
    defaults = Settings()
    return Settings(
        **{f.name: changed(getattr(defaults, f.name), f.name) for f in dataclasses.fields(Settings)}
    )


def test_settings_env_names_every_setting_by_its_variable() -> None:
    env = settings_env(Settings())
    variables = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert sorted(env) == sorted(variables) and len(set(variables)) == len(variables)
    assert all(isinstance(v, str) for v in env.values())
    assert env["KAFKA_BOOTSTRAP"] == "127.0.0.1:9092" and env["KAFKA_IDEMPOTENCE"] == "True"


@pytest.mark.parametrize(
    "settings", [Settings(), everything_changed()], ids=["defaults", "every-field-changed"]
)
def test_settings_env_round_trips_every_field(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for f in dataclasses.fields(Settings):
        monkeypatch.delenv(f.metadata["env"], raising=False)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    back = Settings.from_env()
    for f in dataclasses.fields(Settings):
        assert getattr(back, f.name) == getattr(settings, f.name), f.name
        assert type(getattr(back, f.name)) is type(getattr(settings, f.name)), f.name
    assert back == settings


def test_a_child_process_reads_back_the_settings_it_was_given() -> None:
    settings = everything_changed()
    code = (
        "import dataclasses, json\n"
        "from infra.settings import Settings\n"
        "print(json.dumps(dataclasses.asdict(Settings.from_env())))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in settings_env(settings)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **settings_env(settings)},
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert Settings(**json.loads(out)) == settings


def test_a_free_port_is_free_to_bind() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_open("127.0.0.1", port)


def test_isolated_settings_share_nothing_with_the_demo_centre() -> None:
    demo = Settings()
    s = isolated_settings("drill", "127.0.0.1:40000", "postgresql://postgres@db:5432/", "redis://r:6379/11")
    pid = os.getpid()
    assert s.kafka_bootstrap == "127.0.0.1:40000"
    assert s.kafka_idempotence is False  # Tansu refuses idempotent producers
    assert s.database_url == f"postgresql://postgres@db:5432/centre_drill_{pid}" != demo.database_url
    assert s.redis_url == "redis://r:6379/11"
    # its own consumer group: it must never take the demo centre's partitions
    assert s.faust_app_id == f"centre-drill-{pid}" != demo.faust_app_id
    assert s.state_dir == f"{demo.state_dir}/drill"
    ports = (s.http_port, s.ws_port, s.faust_web_port)
    assert not set(ports) & {demo.http_port, demo.ws_port, demo.faust_web_port}
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    # everything else as the defaults
    differs = {f.name for f in dataclasses.fields(Settings) if getattr(s, f.name) != getattr(demo, f.name)}
    assert differs == {
        "kafka_bootstrap",
        "kafka_idempotence",
        "database_url",
        "redis_url",
        "http_port",
        "ws_port",
        "faust_web_port",
        "faust_app_id",
        "state_dir",
    }


def test_two_isolated_centres_are_kept_apart_by_their_tag() -> None:
    a = isolated_settings("bench", "127.0.0.1:1", "postgresql://h", "redis://h/1")
    b = isolated_settings("test", "127.0.0.1:1", "postgresql://h", "redis://h/1")
    assert (
        a.database_url != b.database_url and a.faust_app_id != b.faust_app_id and a.state_dir != b.state_dir
    )
    assert a.database_url == f"postgresql://h/centre_bench_{os.getpid()}"


def test_overrides_win_over_what_isolated_settings_would_choose() -> None:
    s = isolated_settings(
        "bench",
        "127.0.0.1:1",
        "postgresql://h",
        "redis://h/1",
        http_port=18080,
        topic_partitions=2,
        state_dir="/x",
    )
    assert (s.http_port, s.topic_partitions, s.state_dir) == (18080, 2, "/x")
    with pytest.raises(TypeError):
        isolated_settings("bench", "127.0.0.1:1", "postgresql://h", "redis://h/1", no_such_setting=1)
