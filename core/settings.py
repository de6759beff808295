"""The one settings object. Every process builds it with `load_settings()` at its entry point
and passes it down; nothing reads the environment at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CliSettings", "Settings", "load_cli_settings", "load_settings"]


class Settings(BaseSettings):
    """Configuration for every smoltbot process. Each variable is `SMOLTBOT_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="SMOLTBOT_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".smoltbot",
        description="Data directory: SQLite database, hash secret, gateway spool, config.",
    )
    database_url: str = Field(
        default="",
        description="sqlite:///PATH or postgresql://USER@HOST:PORT/DB. Empty: SQLite in the data dir.",
    )
    hash_secret: str = Field(
        default="",
        description="Secret for the agent hash (HMAC-SHA256). Empty: generated once into the data dir.",
    )
    registry_address: str = Field(default="127.0.0.1:50051", description="host:port of the Registry.")
    observer_address: str = Field(default="127.0.0.1:50052", description="host:port of the Observer.")
    gateway_host: str = Field(default="127.0.0.1", description="Interface the gateway binds.")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="Port of the gateway.")
    api_host: str = Field(default="127.0.0.1", description="Interface the API binds.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port of the REST API and dashboard.")
    upstream_url: str = Field(
        default="https://api.anthropic.com", description="Where the gateway forwards /anthropic/... calls."
    )
    openai_upstream_url: str = Field(
        default="https://api.openai.com",
        description="Where the gateway forwards /openai/... calls "
        "(agents: OPENAI_BASE_URL=http://<gateway>/openai/v1).",
    )
    gemini_upstream_url: str = Field(
        default="https://generativelanguage.googleapis.com",
        description="Where the gateway forwards /gemini/... calls "
        "(google-genai: base_url http://<gateway>/gemini).",
    )
    public_api_url: str = Field(
        default="",
        description="Public URL of the REST API, used in default cards' audit.query_endpoint. "
        "Empty: http://<api_host>:<api_port>.",
    )

    # Sessions
    session_idle_minutes: float = Field(
        default=30, gt=0, description="Idle time that ends an inferred session."
    )

    # Cost
    price_table_path: str = Field(
        default="",
        description="TOML file of model prices laid over the table smoltbot ships (core/prices.toml): an "
        "entry there replaces the shipped one with the same provider and model id. Empty: the shipped table "
        "only.",
    )

    # Gateway
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="Request body limit (413 above)."
    )
    upstream_connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect upstream.")
    upstream_idle_timeout: float = Field(
        default=600.0, gt=0, description="Seconds without a byte from upstream before the call is cut."
    )
    spool_max_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Disk the gateway spool may use; oldest dropped beyond."
    )
    max_exchange_bytes: int = Field(
        default=96 * 1024 * 1024, ge=1024 * 1024,
        description="Largest record of one call: the gateway cuts captured bodies so that a record fits "
        "(the client still gets every byte), and every gRPC service's message limit is derived from it, "
        "so no record exceeds what the transport carries.",
    )
    gateway_processes: int = Field(
        default=1, ge=1, le=64,
        description="Gateway processes serving the one gateway port (SO_REUSEPORT, Linux only; the kernel "
        "spreads connections over them). Each has its own spool and dead-letter directory "
        "(docs/self-hosting.md, \"Several gateway processes\").",
    )
    gateway_orphan_scan_seconds: float = Field(
        default=5.0, gt=0,
        description="How often a gateway process looks for a spool left by a gateway process that is "
        "gone (killed, or no longer started) in the same data dir, and ships it.",
    )
    gateway_event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description="The gateway's event loop: uvloop needs the uvloop package (pip install uvloop; in "
        "the dev extra).",
    )
    enforce_fail_policy: Literal["allow", "block"] = Field(
        default="allow",
        description="What the gateway does with a call under enforcement when it cannot read the agent's "
        "card and has never read one (else the last card's extensions.smoltbot.enforcement.fail_policy "
        "decides): allow lets the call through unenforced, block stops its tool calls. Logged and "
        "counted either way (docs/enforce.md).",
    )
    enforce_card_timeout: float = Field(
        default=0.5, gt=0,
        description="Seconds the gateway waits for the Registry to answer for an agent's card it has "
        "not cached (once per agent while the card watch is live; per call while it is down).",
    )

    # Observer
    analyzer: Literal["local", "anthropic"] = Field(default="local", description="Decision analyzer.")
    analyzer_model: str = Field(default="claude-haiku-4-5", description="Model of the anthropic analyzer.")
    analyzer_api_key: str = Field(default="", description="API key of the anthropic analyzer.")
    analyzer_base_url: str = Field(
        default="", description="Base URL of the anthropic analyzer (empty: SDK default)."
    )
    analyzer_timeout: float = Field(default=20.0, gt=0, description="Seconds per analyzer call.")
    store_reasoning: Literal["full", "redacted", "none"] = Field(
        default="redacted", description="How reasoning text is stored in traces."
    )
    observer_concurrency: int = Field(default=4, ge=1, description="Exchanges processed at once.")
    evidence_enabled: bool = Field(
        default=True,
        description="Check each Messages API call's resent history against the turns the gateway relayed, "
        "and trace where each tool call's arguments came from (docs/evidence.md). Runs in the observer.",
    )
    evidence_wait_seconds: float = Field(
        default=30.0, ge=0,
        description="How long after its call started an exchange waits for the earlier calls of its session "
        "to be recorded before its history is checked without them (the check then names them).",
    )
    evidence_grace_seconds: float = Field(
        default=3.0, ge=0,
        description="A history check that finds something, on a call that ended less than this ago, is done "
        "again after this: an earlier call of the session may still be on its way from the gateway.",
    )
    observer_max_attempts: int = Field(
        default=5, ge=1, description="Tries before an exchange is a failed trace."
    )
    observer_lease_seconds: float = Field(
        default=15.0, ge=3,
        description="Lease on claimed exchanges, renewed while they are worked on: how long the work "
        "of an observer that died waits before another one takes it over.",
    )
    observer_poll_interval: float = Field(
        default=1.0, gt=0,
        description="Seconds between looks at the exchange queue when intake did not announce new work "
        "(finds exchanges other observers put back or stored).",
    )
    observer_card_ttl: float = Field(
        default=5.0, ge=0, description="Seconds the Observer keeps an agent's cards from the Registry cached."
    )
    observer_stop_grace: float = Field(
        default=5.0, ge=0,
        description="Seconds a stopping Observer lets exchanges in processing finish; the others go back "
        "to the queue.",
    )
    observer_cpu_workers: int | None = Field(
        default=None, ge=0,
        description="Worker processes that read and analyse exchanges beside the event loop. Unset: one "
        "per core beyond the first, at most 4; 0: all inline.",
    )
    observer_scrub_interval: float = Field(
        default=5.0, gt=0,
        description="Least seconds between two WAL truncations that wipe deleted request bodies from disk "
        "(SQLite).",
    )
    otel_export: bool = Field(
        default=False,
        description="Export each processed exchange as OpenTelemetry GenAI spans over OTLP. Endpoint, "
        "protocol (http/protobuf or grpc), headers and timeout (seconds) come from the standard "
        "OTEL_EXPORTER_OTLP_* variables; see docs/otel.md.",
    )
    otel_queue_size: int = Field(
        default=2048, ge=1,
        description="Spans waiting for export at most; more are dropped and counted (export never "
        "holds up tracing).",
    )
    otel_batch_size: int = Field(default=256, ge=1, description="Spans sent in one OTLP export call at most.")
    observer_metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Serve Prometheus /metrics over HTTP on this port of metrics_host. 0: off.",
    )
    integrity_window: int = Field(default=100, ge=1, description="Traces in the recent integrity window.")
    retention_max_days: int = Field(
        default=365, ge=1,
        description="Longest an agent's traces, violations, usage rows, tool executions and exchange records "
        "are kept, whatever its card's audit.retention_days says; also the period of agents whose card "
        "declares none (0) and of records with no agent.",
    )
    retention_min_days: int = Field(
        default=1, ge=1,
        description="Shortest retention: a card asking for less keeps its data this many days.",
    )
    payload_ttl_hours: float = Field(
        default=72.0, gt=0,
        description="Raw exchange payloads (request and response bodies) older than this are deleted "
        "whatever the exchange's outcome (failed exchanges keep theirs until then; "
        "done ones lose it at once).",
    )
    retention_interval: float = Field(
        default=3600.0, gt=0, description="Seconds between two retention passes of an observer.",
    )
    retention_batch_size: int = Field(
        default=500, ge=1, le=5000,
        description="Rows one retention batch deletes at most (one short transaction each, so intake is "
        "never held up).",
    )
    drift_threshold: float = Field(
        default=0.30, ge=0, le=1, description="Similarity below which a trace drifts."
    )
    drift_sustained: int = Field(
        default=3, ge=1, description="Consecutive drifting traces that raise an alert."
    )
    drift_baseline_size: int = Field(
        default=10, ge=1, description="Early traces that form the agent's baseline."
    )
    drift_sweep_interval: float = Field(
        default=2.0, gt=0,
        description="Seconds between sweeps for agents whose traces wait for the drift detector (traces "
        "held back by an older unfinished exchange, or stored before a restart).",
    )

    # Alerts and webhooks (docs/alerts.md)
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks go to loopback, private, link-local and other non-public addresses. Off: "
        "such destinations are refused when subscribing and again at each delivery (after DNS), so an "
        "agent's owner cannot make the observer call internal services.",
    )
    webhook_timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds a webhook delivery may take (connect to response)."
    )
    webhook_max_attempts: int = Field(
        default=12, ge=1, le=100, description="Attempts of a delivery before it is marked failed for good."
    )
    webhook_backoff_base: float = Field(
        default=2.0, gt=0,
        description="Seconds before the first retry; doubled per attempt up to webhook_backoff_max, each "
        "wait between half of that and all of it (jitter).",
    )
    webhook_backoff_max: float = Field(
        default=3600.0, gt=0, description="Longest wait between two attempts of a delivery, in seconds."
    )
    alert_poll_interval: float = Field(
        default=2.0, gt=0,
        description="Seconds between two passes of the alert feed (new events into the outbox) and of the "
        "webhook sender, when nothing wakes them sooner.",
    )
    alert_settle_seconds: float = Field(
        default=120.0, ge=0,
        description="Each feed pass reads events again this far back from where the last one stopped, so "
        "an event committed late (a long transaction, clock skew between observers) is not missed.",
    )
    alert_failure_window: float = Field(
        default=900.0, ge=60,
        description="Length in seconds of the fixed windows the failure-rate alert counts calls in.",
    )
    alert_failure_min_calls: int = Field(
        default=5, ge=1, description="Calls a failure-rate window needs before its rate can raise an alert."
    )

    # Registry
    registry_touch_interval: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between writes of coalesced agent and session activity (last seen) by the "
        "Registry.",
    )
    registry_metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Serve Prometheus /metrics over HTTP on this port of metrics_host. 0: off.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface the registry's and observer's /metrics HTTP ports bind (the gateway and "
        "the API serve /metrics on their own port).",
    )

    # Logging
    log_level: str = Field(default="INFO", description="Log level of every process.")

    # gRPC transport security (see core/tls.py)
    tls_cert: str = Field(
        default="",
        description="PEM certificate (chain) of this process: served by the registry/observer, presented as "
        "client certificate by every gRPC client. Needs tls_key.",
    )
    tls_key: str = Field(default="", description="PEM private key of tls_cert.")
    tls_ca: str = Field(
        default="",
        description="PEM CA bundle. Clients: use TLS and trust only this CA. Servers with a certificate: "
        "require client certificates signed by it (mutual TLS).",
    )
    tls_server_name: str = Field(
        default="",
        description="Name the servers' certificates are checked against, when it is not the host in the "
        "address (e.g. with a list of IP addresses).",
    )
    allow_insecure_grpc: bool = Field(
        default=False,
        description="Allow plaintext gRPC beyond loopback (servers binding other interfaces, clients "
        "dialing other hosts). Only on a network you trust.",
    )
    service_token: str = Field(
        default="", repr=False,
        description="Service credential every internal gRPC call carries and every registry/observer "
        "requires (at least 32 characters; give all services the same one when they run on several "
        "machines). Empty: generated once into the data dir (file service_token, 0600).",
    )
    grpc_health_port: int = Field(
        default=0, ge=0, le=65535,
        description="Also serve grpc.health.v1 alone, in plaintext, on this port of every interface "
        "(Kubernetes gRPC probes cannot speak TLS). 0: off.",
    )

    # API
    api_max_request_bytes: int = Field(
        default=2 * 1024 * 1024, gt=0,
        description="Request body limit of the REST API (413 above), checked before a body is read whole or "
        "parsed. Room for a card at the registry's card size limit.",
    )

    # Behind a reverse proxy
    root_path: str = Field(
        default="",
        description="Path prefix the API and dashboard are served under by a reverse proxy (e.g. /smoltbot).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated proxy addresses/networks (or *) whose X-Forwarded-For/-Proto the API "
        "trusts.",
    )

    @field_validator("upstream_url", "openai_upstream_url", "gemini_upstream_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("root_path")
    @classmethod
    def _normalise_root_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("root_path must start with / (e.g. /smoltbot)")
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'smoltbot.db'}"

    @property
    def effective_public_api_url(self) -> str:
        return self.public_api_url.rstrip("/") or f"http://{self.api_host}:{self.api_port}"


def _services_field(name: str) -> Any:
    """`Settings`' own definition of a field (pydantic takes a FieldInfo as one): one rule, one default."""
    return Settings.model_fields[name]


class CliSettings(BaseSettings):
    """What the user commands (`smoltbot init`, `status`, `logs`, `card`, `claim`, `config`) read:
    three of the services' settings, the same fields (so the same rules and defaults), and their
    own. Not `Settings` itself, so that a service variable a command does not use cannot stop it."""

    # An empty variable means "not set" here, as the commands have always read it.
    model_config = SettingsConfigDict(env_prefix="SMOLTBOT_", extra="ignore", env_ignore_empty=True)

    home: Path = _services_field("home")
    api_port: int = _services_field("api_port")
    gateway_port: int = _services_field("gateway_port")

    # Command line (smoltbot init, status, logs, card, claim, config)
    api_url: str = Field(
        default="",
        description="The smoltbot REST API the commands call (`--api` overrides it). Empty: the config "
        "file's api_url, else http://127.0.0.1:<SMOLTBOT_API_PORT>.",
    )
    gateway_url: str = Field(
        default="",
        description="The gateway `smoltbot init` points the agent at (`--gateway` overrides it). Empty: "
        "http://127.0.0.1:<SMOLTBOT_GATEWAY_PORT>.",
    )
    debug: bool = Field(
        default=False,
        description="Let an unexpected error of a command end in its traceback instead of one line.",
    )


def load_cli_settings() -> CliSettings:
    """The user commands' settings, from the environment (pydantic's ValidationError names the field)."""
    return CliSettings()


def load_settings(**overrides: object) -> Settings:
    """Builds settings from the environment, with explicit overrides (CLI flags, tests) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
