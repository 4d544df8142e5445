"""Settings: every field from one environment variable, with a documented default."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, fields

import pytest

from infra.settings import Settings, describe

ENV = {f.metadata["env"]: f for f in fields(Settings)}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_field_documented() -> None:
    for f in fields(Settings):
        assert set(f.metadata) >= {"env", "doc"}, f.name
        assert f.metadata["env"] == f.metadata["env"].upper() and f.metadata["env"].strip()
        assert f.metadata["doc"].strip(), f.name
        assert f.default is not MISSING and f.default_factory is MISSING, f.name
        assert f.type in ("str", "int", "float", "bool"), f"{f.name}: from_env cannot parse {f.type}"
    assert len(ENV) == len(fields(Settings))  # one variable per field


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings.from_env()
    assert s == Settings()
    assert s.http_port == 8080 and s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.kafka_idempotence is True and s.fetch_max_wait_ms == 10  # small against Tansu


def test_from_env_parses_ints_bools_and_strings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_PORT", "9090")
    clean_env.setenv("KAFKA_FETCH_MAX_WAIT_MS", "25")
    clean_env.setenv("NEAREST_PER_KIND", "3")
    clean_env.setenv("KAFKA_IDEMPOTENCE", "false")
    clean_env.setenv("KAFKA_BOOTSTRAP", "kafka-1:9092, kafka-2:9092,")
    clean_env.setenv("DATABASE_URL", "postgresql://centre@db:5432/centre")
    s = Settings.from_env()
    assert (s.http_port, s.fetch_max_wait_ms, s.nearest_per_kind) == (9090, 25, 3)
    assert isinstance(s.http_port, int)
    assert s.kafka_idempotence is False
    assert s.database_url == "postgresql://centre@db:5432/centre"
    assert s.kafka_servers == ["kafka-1:9092", "kafka-2:9092"]
    assert s.ws_port == 8081  # untouched


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("on", True),
     ("0", False), ("false", False), ("no", False), ("off", False), ("nonsense", False)],
)  # fmt: skip
def test_bool_parsing(clean_env: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    clean_env.setenv("KAFKA_IDEMPOTENCE", raw)
    assert Settings.from_env().kafka_idempotence is value


def test_empty_variable_means_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_PORT", "")
    clean_env.setenv("KAFKA_IDEMPOTENCE", "")
    s = Settings.from_env()
    assert s.http_port == 8080 and s.kafka_idempotence is True


def test_bad_int_raises(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WS_PORT", "eighty")
    with pytest.raises(ValueError):
        Settings.from_env()


def test_bad_float_raises_naming_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BOARD_RESYNC_S", "soon")
    with pytest.raises(ValueError, match="BOARD_RESYNC_S"):
        Settings.from_env()


def test_every_variable_round_trips(clean_env: pytest.MonkeyPatch) -> None:
    """Set every variable to a non-default value; each lands in its own field."""
    expected = {}
    for name, f in ENV.items():
        if f.type == "int":
            value: object = int(str(f.default)) + 7
        elif f.type == "float":
            value = float(str(f.default)) + 0.5
        elif f.type == "bool":
            value = not f.default
        else:
            value = f"custom-{name.lower()}"
        clean_env.setenv(name, str(value).lower() if isinstance(value, bool) else str(value))
        expected[f.name] = value
    assert dataclasses.asdict(Settings.from_env()) == expected


def test_ws_url(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings(http_host="10.0.0.5", ws_port=9001).ws_url == "ws://10.0.0.5:9001"
    assert Settings(ws_public_url="wss://centre.example/ws").ws_url == "wss://centre.example/ws"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().http_port = 1  # type: ignore[misc]


def test_describe_lists_every_variable() -> None:
    text = describe()
    lines = text.splitlines()
    assert len(lines) == len(ENV)
    for line, f in zip(lines, fields(Settings), strict=True):
        assert line.startswith(f.metadata["env"])
        assert str(f.default) in line and f.metadata["doc"] in line


@pytest.mark.parametrize(
    ("name", "raw"), [("ACCOUNT_REQUESTS_PER_S", "0"), ("PUBLIC_REQUESTS_PER_S", "0.01")]
)
def test_a_request_limit_that_would_refuse_everything_is_refused(
    clean_env: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    clean_env.setenv(name, raw)
    with pytest.raises(ValueError, match=f"{name}={float(raw)!r}: at least"):
        Settings.from_env()
