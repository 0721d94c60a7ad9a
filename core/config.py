"""Settings from ``OBSERVE_*`` environment variables, with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Outgoing mail. Without a host, mails are logged (recipient and subject only)."""

    host: str | None = None
    port: int = 25
    user: str | None = None
    password: str | None = None
    sender: str = "observe@localhost"
    tls: bool = False


@dataclass(frozen=True, slots=True)
class OAuthProviderSettings:
    """One sign-in provider (core.oauth). Without a client id and secret the
    provider is off and its routes answer NOT_FOUND. ``url`` is the OpenID
    issuer for "google" (any OIDC provider: Keycloak, Authentik) and the web
    base for "github"; ``api_url`` is GitHub's REST API base."""

    client_id: str | None = None
    client_secret: str | None = None
    url: str = ""
    api_url: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"OAuthProviderSettings(client_id={self.client_id!r}, url={self.url!r}, api_url={self.api_url!r})"


GOOGLE_ISSUER = "https://accounts.google.com"
GITHUB_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"


def _env_delays(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated seconds, e.g. ``30,120,420,1230``."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SystemExit(f"{name} must be comma-separated seconds, e.g. 30,120,420,1230") from None
    if not delays or any(d < 0 or d != d for d in delays):
        raise SystemExit(f"{name} must be comma-separated non-negative seconds")
    return delays


def rate_limit_defaults() -> dict[str, str]:
    from core.rpc.ratelimit import DEFAULTS

    return dict(DEFAULTS)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    data_dir: Path = Path("./data")
    database_url: str | None = None
    redis_url: str | None = None
    # Where users reach the server (links in e-mails, heartbeat URLs). Empty:
    # where it listens, the port it really got included (see public_base).
    public_url: str = ""
    allow_private_targets: bool = False
    # Addresses and CIDRs whose X-Forwarded-For / Forwarded are believed
    # (core.rpc.proxies); empty: none, the peer address is the client's.
    trusted_proxies: str = ""
    # Bearer token for the per-monitor series on /metrics; unset: never shown.
    metrics_token: str | None = None
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    # Telegram Bot API base (core.alerts.telegram): a self-hosted Bot API
    # server, or a local receiver in tests.
    telegram_api_url: str = "https://api.telegram.org"
    session_ttl_days: int = 30
    log_level: str = "info"
    rate_limits: dict[str, str] = field(default_factory=dict)
    rate_limit_prefix: str = "observe"
    secret_keys: str | None = None
    plans: str | None = None  # JSON, see core.accounts.plans
    default_plan: str = "unlimited"
    # Checking engine (see core.scheduler).
    check_concurrency: int = 1000
    check_target_concurrency: int = 64
    check_flush_ms: int = 1000
    lease_ttl_sec: float = 15.0
    check_retention_days: int = 7
    rollup_retention_days: int = 400
    # Multiplies every monitor's interval: 1 in production; tests and demos
    # shrink it (0.05 turns 30 s into 1.5 s) to watch thresholds flip quickly.
    check_interval_scale: float = 1.0
    # PostgreSQL: how long one API read may run before the server cancels it
    # (503 UNAVAILABLE); 0 turns it off. Migrations and writes have none.
    db_statement_timeout_ms: int = 10000
    # Incidents (core.incidents): down again within this many seconds of an
    # automatic resolve reopens the same incident.
    incident_reopen_sec: int = 300
    # Alert delivery (core.alerts.dispatcher): the waits before attempts 2, 3,
    # 4 and 5 in seconds (each with ±20 % jitter; Retry-After wins when
    # longer). The default spreads five attempts over about 30 minutes; tests
    # shrink it.
    alert_retry_delays: tuple[float, ...] = (30.0, 120.0, 420.0, 1230.0)
    # Logs (core.logs): whole UTC days of records kept; the records the batch
    # writer may hold unwritten before ingest answers 503 with Retry-After.
    log_retention_days: int = 14
    log_queue_records: int = 200_000
    # Log alerts (core.log_alerts): seconds between evaluations.
    log_alert_interval_sec: float = 10.0
    # Sign-in providers (core.oauth, CONTRACT.md "OAuth").
    oauth_google: OAuthProviderSettings = field(default_factory=lambda: OAuthProviderSettings(url=GOOGLE_ISSUER))
    oauth_github: OAuthProviderSettings = field(
        default_factory=lambda: OAuthProviderSettings(url=GITHUB_URL, api_url=GITHUB_API_URL)
    )

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            http_host=env("OBSERVE_HTTP_HOST", "127.0.0.1"),
            http_port=_env_int("OBSERVE_HTTP_PORT", 8080),
            grpc_host=env("OBSERVE_GRPC_HOST", "127.0.0.1"),
            grpc_port=_env_int("OBSERVE_GRPC_PORT", 50051),
            data_dir=Path(env("OBSERVE_DATA_DIR", "./data")),
            database_url=env("OBSERVE_DATABASE_URL") or None,
            redis_url=env("OBSERVE_REDIS_URL") or None,
            public_url=env("OBSERVE_PUBLIC_URL", "").rstrip("/"),
            allow_private_targets=_env_bool("OBSERVE_ALLOW_PRIVATE_TARGETS", False),
            trusted_proxies=env("OBSERVE_TRUSTED_PROXIES", ""),
            metrics_token=env("OBSERVE_METRICS_TOKEN") or None,
            smtp=SmtpSettings(
                host=env("OBSERVE_SMTP_HOST") or None,
                port=_env_int("OBSERVE_SMTP_PORT", 25),
                user=env("OBSERVE_SMTP_USER") or None,
                password=env("OBSERVE_SMTP_PASSWORD") or None,
                sender=env("OBSERVE_SMTP_FROM", "observe@localhost"),
                tls=_env_bool("OBSERVE_SMTP_TLS", False),
            ),
            telegram_api_url=(env("OBSERVE_TELEGRAM_API_URL") or "https://api.telegram.org").rstrip("/"),
            log_level=env("OBSERVE_LOG_LEVEL", "info"),
            rate_limits={
                name: env(f"OBSERVE_RATE_LIMIT_{name}") or spec for name, spec in rate_limit_defaults().items()
            },
            rate_limit_prefix=env("OBSERVE_RATE_LIMIT_PREFIX", "observe"),
            secret_keys=env("OBSERVE_SECRET_KEYS") or None,
            plans=env("OBSERVE_PLANS") or None,
            default_plan=env("OBSERVE_DEFAULT_PLAN", "unlimited"),
            check_concurrency=_env_int("OBSERVE_CHECK_CONCURRENCY", 1000),
            check_target_concurrency=_env_int("OBSERVE_CHECK_TARGET_CONCURRENCY", 64),
            check_flush_ms=_env_int("OBSERVE_CHECK_FLUSH_MS", 1000),
            lease_ttl_sec=float(env("OBSERVE_LEASE_TTL_SEC") or 15),
            check_retention_days=_env_int("OBSERVE_CHECK_RETENTION_DAYS", 7),
            rollup_retention_days=_env_int("OBSERVE_ROLLUP_RETENTION_DAYS", 400),
            check_interval_scale=float(env("OBSERVE_CHECK_INTERVAL_SCALE") or 1.0),
            db_statement_timeout_ms=_env_int("OBSERVE_DB_STATEMENT_TIMEOUT_MS", 10000),
            incident_reopen_sec=_env_int("OBSERVE_INCIDENT_REOPEN_SEC", 300),
            alert_retry_delays=_env_delays("OBSERVE_ALERT_RETRY_DELAYS", (30.0, 120.0, 420.0, 1230.0)),
            log_retention_days=max(1, _env_int("OBSERVE_LOG_RETENTION_DAYS", 14)),
            log_queue_records=max(1000, _env_int("OBSERVE_LOG_QUEUE_RECORDS", 200_000)),
            log_alert_interval_sec=float(env("OBSERVE_LOG_ALERT_INTERVAL_SEC") or 10.0),
            oauth_google=OAuthProviderSettings(
                client_id=env("OBSERVE_OAUTH_GOOGLE_CLIENT_ID") or None,
                client_secret=env("OBSERVE_OAUTH_GOOGLE_CLIENT_SECRET") or None,
                url=env("OBSERVE_OAUTH_GOOGLE_ISSUER") or GOOGLE_ISSUER,  # exactly as the issuer names itself
            ),
            oauth_github=OAuthProviderSettings(
                client_id=env("OBSERVE_OAUTH_GITHUB_CLIENT_ID") or None,
                client_secret=env("OBSERVE_OAUTH_GITHUB_CLIENT_SECRET") or None,
                url=(env("OBSERVE_OAUTH_GITHUB_URL") or GITHUB_URL).rstrip("/"),
                api_url=(env("OBSERVE_OAUTH_GITHUB_API_URL") or GITHUB_API_URL).rstrip("/"),
            ),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the non-None ``changes`` applied (command-line flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def public_base(self) -> str:
        """``public_url``, or else the REST address this server listens on. A
        wildcard host (``0.0.0.0``, ``::``) reads as loopback: it says nothing
        about the name users reach the server by (set OBSERVE_PUBLIC_URL)."""
        if self.public_url:
            return self.public_url
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.http_host, self.http_host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'observe.db').resolve()}"
