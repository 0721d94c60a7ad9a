"""Assembles the product: database, services, the RPC table and the pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import FileDescriptor

from core.accounts.plans import PlanBook, parse_plans
from core.accounts.service import AuthService, MeService
from core.alerts import ChannelSettings
from core.alerts.dispatcher import Dispatcher
from core.audit.service import AuditService
from core.config import Settings, rate_limit_defaults
from core.health import Readiness
from core.heartbeats.ingest import PingWriter
from core.heartbeats.service import HeartbeatService
from core.heartbeats.watcher import LatenessWatcher
from core.incidents.service import IncidentService
from core.log_alerts.service import LogAlertService
from core.logs.engines import log_store_for
from core.logs.retention import LogRetention
from core.logs.service import LogService
from core.logs.store import IdSource
from core.logs.tail import TailBroker
from core.logs.writer import LogWriter
from core.mail.sender import Mailer
from core.maintenance.calendar import MaintenanceCalendar
from core.maintenance.service import MaintenanceService
from core.members.service import MemberService
from core.monitors.service import MonitorService
from core.monitors.store import MonitorStore
from core.oauth.service import OAuthService
from core.rpc.auth import Authenticator
from core.rpc.idempotency import IdempotencyStore
from core.rpc.methods import Method, build_methods, observe_files
from core.rpc.pipeline import Pipeline
from core.rpc.ratelimit import RateLimiter
from core.status_pages.access import PageTokens
from core.status_pages.badges import Badges
from core.status_pages.public_service import PublicStatusPageService
from core.status_pages.service import StatusPageService
from core.status_pages.subscriptions import Subscriptions
from core.status_pages.view import PublicViews
from core.storage.db import Database
from core.storage.sealing import Sealer
from core.tokens.service import TokenService


@dataclass
class Core:
    """Everything a transport needs to serve calls."""

    settings: Settings
    db: Database
    mailer: Mailer
    plans: PlanBook
    pipeline: Pipeline
    methods: dict[str, Method]
    monitor_store: MonitorStore
    monitors: MonitorService
    rate_limiter: RateLimiter
    ready: Readiness  # /health/ready
    sealer: Sealer
    calendar: MaintenanceCalendar  # the server starts and stops it
    dispatcher: Dispatcher  # alert delivery; the server starts and stops it
    ping_writer: PingWriter  # heartbeat group commit; the server starts and stops it
    lateness: LatenessWatcher  # heartbeat deadlines; the server starts and stops it
    page_views: PublicViews  # status pages' public views and their cache; the server starts and stops it
    log_writer: LogWriter  # the logs' batch writer (opens the log store); the server starts and stops it
    log_tails: TailBroker  # live tail fan-out; the server closes it
    log_retention: LogRetention  # drops whole days of logs; the server starts and stops it

    async def close(self) -> None:
        await self.db.close()


def build_core(
    settings: Settings,
    *,
    extra_files: Iterable[FileDescriptor] = (),
    extra_services: Iterable[object] = (),
) -> Core:
    """The core for ``settings``; ``extra_*`` add services from other protos
    (tests use it to prove an annotated RPC needs no transport edit).
    ``settings.http_port`` must be the port really served (not 0): links
    name it unless OBSERVE_PUBLIC_URL is set."""
    settings = settings.with_overrides(public_url=settings.public_base)
    db = Database(settings.effective_database_url, read_timeout_ms=settings.db_statement_timeout_ms)
    mailer = Mailer(settings.smtp)
    sealer = Sealer.from_settings(settings.secret_keys, settings.data_dir)
    plan_book = PlanBook(parse_plans(settings.plans), settings.default_plan)
    monitor_store = MonitorStore(sealer, settings.public_url)
    monitors = MonitorService(db=db, store=monitor_store, plans=plan_book, allow_private=settings.allow_private_targets)
    monitors.alert_settings = ChannelSettings.from_settings(settings)
    calendar = MaintenanceCalendar(db)
    monitor_store.calendar = calendar  # covered monitors show "maintenance"
    dispatcher = Dispatcher(db=db, settings=settings, sealer=sealer)
    scale = settings.check_interval_scale
    ping_writer = PingWriter(db, scale=scale)
    lateness = LatenessWatcher(db, scale=scale, retention_days=settings.check_retention_days)
    ping_writer.on_deadline = lateness.wake
    page_views = PublicViews(db, calendar=calendar, settings=settings)
    page_tokens = PageTokens(sealer)
    log_store = log_store_for(db)
    log_writer = LogWriter(log_store, IdSource(settings.log_retention_days), capacity=settings.log_queue_records)
    log_tails = TailBroker(settings.redis_url, settings.rate_limit_prefix)
    log_writer.listeners.append(log_tails.publish)
    services: list[object] = [
        AuthService(db=db, settings=settings, mailer=mailer, plans=plan_book),
        MeService(db=db, plans=plan_book),
        TokenService(db=db),
        AuditService(db=db),
        MemberService(db=db, settings=settings, mailer=mailer, sealer=sealer),
        OAuthService(db=db, settings=settings, sealer=sealer, plans=plan_book),
        monitors,
        IncidentService(db=db, monitor_store=monitor_store, notify=dispatcher.wake),
        MaintenanceService(db=db, calendar=calendar, notify=dispatcher.wake),
        HeartbeatService(db=db, writer=ping_writer),
        StatusPageService(db=db, views=page_views, public_url=settings.public_url),
        PublicStatusPageService(
            views=page_views,
            tokens=page_tokens,
            subscriptions=Subscriptions(db, page_tokens, settings.public_url, notify=dispatcher.wake),
            badges=Badges(db, calendar=calendar),
            public_url=settings.public_url,
        ),
        LogService(db=db, store=log_store, writer=log_writer, tails=log_tails, plans=plan_book),
        LogAlertService(db=db, sealer=sealer, allow_private=settings.allow_private_targets),
        *extra_services,
    ]
    files = [*observe_files(), *extra_files]
    methods = build_methods(files, services)
    rate_limiter = RateLimiter(
        limits={**rate_limit_defaults(), **settings.rate_limits},
        redis_url=settings.redis_url,
        prefix=settings.rate_limit_prefix,
    )
    pipeline = Pipeline(
        authenticator=Authenticator(db=db),
        db=db,
        idempotency=IdempotencyStore(db=db),
        rate_limiter=rate_limiter,
    )
    return Core(
        settings=settings,
        db=db,
        mailer=mailer,
        plans=plan_book,
        pipeline=pipeline,
        methods=methods,
        monitor_store=monitor_store,
        monitors=monitors,
        rate_limiter=rate_limiter,
        ready=Readiness(db=db, rate_limiter=rate_limiter),
        sealer=sealer,
        calendar=calendar,
        dispatcher=dispatcher,
        ping_writer=ping_writer,
        lateness=lateness,
        page_views=page_views,
        log_writer=log_writer,
        log_tails=log_tails,
        log_retention=LogRetention(log_store, settings.log_retention_days),
    )
