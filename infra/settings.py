"""Every setting comes from an environment variable with a documented default.

One frozen object is built by the composition root of each process and passed down;
nothing reads the environment anywhere else, so tests can run several stacks side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path

from contracts.timewindow import TimeWindow

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. The `doc` metadata is printed by `python -m infra.settings`."""

    kafka_bootstrap: str = field(
        default="127.0.0.1:9092", metadata={"env": "KAFKA_BOOTSTRAP", "doc": "Kafka bootstrap servers"}
    )
    database_url: str = field(
        default="postgresql://postgres@127.0.0.1:5432/centre",
        metadata={"env": "DATABASE_URL", "doc": "PostgreSQL DSN (the database is created if missing)"},
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0", metadata={"env": "REDIS_URL", "doc": "Redis URL"}
    )
    http_host: str = field(default="127.0.0.1", metadata={"env": "HTTP_HOST", "doc": "HTTP bind address"})
    http_port: int = field(default=8080, metadata={"env": "HTTP_PORT", "doc": "Intake, read API and pages"})
    ws_port: int = field(default=8081, metadata={"env": "WS_PORT", "doc": "WebSocket server port"})
    ws_public_url: str = field(
        default="",
        metadata={
            "env": "WS_PUBLIC_URL",
            "doc": "WebSocket URL given to browsers (default ws://<host>:<WS_PORT>)",
        },
    )
    ws_allowed_origins: str = field(
        default="",
        metadata={
            "env": "WS_ALLOWED_ORIGINS",
            "doc": "Pages (Origin) allowed to open the WebSocket, comma-separated; * for any "
            "(default http://127.0.0.1:<HTTP_PORT>, http://localhost:<HTTP_PORT>)",
        },
    )
    topic_partitions: int = field(
        default=6, metadata={"env": "TOPIC_PARTITIONS", "doc": "Partitions per pipeline topic"}
    )
    topic_replication: int = field(
        default=1, metadata={"env": "TOPIC_REPLICATION", "doc": "Replication factor (3 on a real cluster)"}
    )
    kafka_idempotence: bool = field(
        default=True,
        metadata={
            "env": "KAFKA_IDEMPOTENCE",
            "doc": "Idempotent producers (Tansu 0.6 refuses them: the local stack sets false)",
        },
    )
    fetch_max_wait_ms: int = field(
        default=10,
        metadata={"env": "KAFKA_FETCH_MAX_WAIT_MS", "doc": "Consumers' fetch wait; keep small against Tansu"},
    )
    dispatcher_lanes: int = field(
        default=8,
        metadata={
            "env": "DISPATCHER_LANES",
            "doc": "Records of one fetch a dispatcher applies side by side (by incident id: one writer each)",
        },
    )
    faust_app_id: str = field(
        default="centre-streams", metadata={"env": "FAUST_APP_ID", "doc": "Faust app id (consumer group)"}
    )
    faust_web_port: int = field(
        default=6066, metadata={"env": "FAUST_WEB_PORT", "doc": "Faust worker's web port (first worker)"}
    )
    state_dir: str = field(
        default=str(ROOT / ".state"), metadata={"env": "STATE_DIR", "doc": "Logs, pids and Faust data"}
    )
    max_body_bytes: int = field(
        default=1_048_576, metadata={"env": "MAX_BODY_BYTES", "doc": "Largest accepted HTTP body"}
    )
    nearest_per_kind: int = field(
        default=5, metadata={"env": "NEAREST_PER_KIND", "doc": "Responders of each kind recommended"}
    )
    nearest_radius_m: int = field(
        default=20_000, metadata={"env": "NEAREST_RADIUS_M", "doc": "Search radius for nearest responders"}
    )
    plans_path: str = field(
        default="",
        metadata={"env": "PLANS_PATH", "doc": "Response plans file (default: dispatcher/plans.yaml)"},
    )
    session_ttl_s: int = field(
        default=8 * 3600, metadata={"env": "SESSION_TTL_S", "doc": "Operator session lifetime (idle)"}
    )
    trusted_proxies: str = field(
        default="",
        metadata={
            "env": "TRUSTED_PROXIES",
            "doc": "Proxy IPs or CIDRs whose X-Forwarded-For names the client (the load balancer)",
        },
    )
    redeliver_after_s: int = field(
        default=10,
        metadata={
            "env": "REDELIVER_AFTER_S",
            "doc": "Re-publish an unconfirmed report or command after this long (doubling each time)",
        },
    )
    redeliver_attempts: int = field(
        default=8,
        metadata={"env": "REDELIVER_ATTEMPTS", "doc": "Re-publish at most this many times, then alert"},
    )
    intake_max_future_s: int = field(
        default=300,
        metadata={
            "env": "INTAKE_MAX_FUTURE_S",
            "doc": "A report's or fix's own time may lie this far after its arrival (skew; at most 1 day)",
        },
    )
    intake_max_age_s: int = field(
        default=30 * 86400,
        metadata={
            "env": "INTAKE_MAX_AGE_S",
            "doc": "A report's own time may lie this far before its arrival (at most 366 days)",
        },
    )
    account_requests_per_s: float = field(
        default=10.0,
        metadata={
            "env": "ACCOUNT_REQUESTS_PER_S",
            "doc": "One account's API requests a second on each console server (bursts of 10 s' worth)",
        },
    )
    public_requests_per_s: float = field(
        default=2.0,
        metadata={
            "env": "PUBLIC_REQUESTS_PER_S",
            "doc": "Public progress lookups a second per client address (bursts of 30 s' worth)",
        },
    )
    board_resync_s: float = field(
        default=5.0,
        metadata={"env": "BOARD_RESYNC_S", "doc": "Consoles compare their board with PostgreSQL this often"},
    )
    live_snapshot_s: float = field(
        default=10.0,
        metadata={
            "env": "LIVE_SNAPSHOT_S",
            "doc": "Responder positions copied to PostgreSQL this often (rebuilds a lost Redis)",
        },
    )
    position_push_ms: int = field(
        default=100,
        metadata={
            "env": "POSITION_PUSH_MS",
            "doc": "Responders' moves pushed to consoles this often, one frame for all (milliseconds)",
        },
    )
    sim_reports_per_min: int = field(
        default=6,
        metadata={
            "env": "SIM_REPORTS_PER_MIN",
            "doc": "Demo simulator's reports a minute under ./centre run (0: no simulator)",
        },
    )

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{f.metadata['env']}={raw!r}: expected a whole number") from None
            elif f.type in ("float", float):
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{f.metadata['env']}={raw!r}: expected a number") from None
            elif f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        self.time_window  # noqa: B018 (refuses a window outside the pipeline's own limits)
        # A limit whose burst holds less than one request would refuse every request for ever
        # (and 0 would divide by zero): the bursts are 10 s' and 30 s' worth of the rate.
        for name, rate, burst_s in (
            ("ACCOUNT_REQUESTS_PER_S", self.account_requests_per_s, 10.0),
            ("PUBLIC_REQUESTS_PER_S", self.public_requests_per_s, 30.0),
        ):
            if not rate * burst_s >= 1.0:
                raise ValueError(f"{name}={rate!r}: at least {1 / burst_s:g} (a burst of one request)")

    @property
    def time_window(self) -> TimeWindow:
        """The plausible window for sources' own times (contracts.timewindow)."""
        try:
            return TimeWindow(
                timedelta(seconds=self.intake_max_future_s), timedelta(seconds=self.intake_max_age_s)
            )
        except ValueError as exc:
            raise ValueError(f"INTAKE_MAX_FUTURE_S / INTAKE_MAX_AGE_S: {exc}") from None

    @property
    def ws_url(self) -> str:
        return self.ws_public_url or f"ws://{self.http_host}:{self.ws_port}"

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]


def describe() -> str:
    """A table of every variable, its default and what it does (for the README and `--help`)."""
    rows = [f"{f.metadata['env']:<24} {f.default!s:<48} {f.metadata['doc']}" for f in fields(Settings)]
    return "\n".join(rows)


if __name__ == "__main__":
    print(describe())
