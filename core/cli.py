"""The core's commands of ``observe``: migrate, admin (``serve`` is gateway.cli)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from core.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        http_host=getattr(args, "host", None),
        http_port=getattr(args, "port", None),
        grpc_host=getattr(args, "grpc_host", None),
        grpc_port=getattr(args, "grpc_port", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        database_url=getattr(args, "database_url", None),
    )


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """The ``observe`` parser with the commands of the core: migrate and admin.
    The process that serves REST and gRPC is assembled on the gateway side
    (gateway/cli.py adds ``serve``), so the core never imports the gateway."""
    parser = argparse.ArgumentParser(
        prog="observe", description="Uptime monitoring API: checks and their stats, organisations, tokens, audit."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--data-dir")
    migrate.add_argument("--database-url")

    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create_user = admin_sub.add_parser("create-user", help="create a user and organisation (owner)")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--name", default="")
    create_user.add_argument("--org-name", default="")
    create_user.add_argument("--password", help="sign-in password (10-256 chars); omit for token-only access")
    create_user.add_argument("--print-token", action="store_true", help="mint a PAT with scope * and print it")
    create_user.add_argument(
        "--exist-ok",
        action="store_true",
        help="when the e-mail already has an account, keep it (no error); --print-token mints a token for it",
    )
    create_user.add_argument("--data-dir")
    create_user.add_argument("--database-url")
    set_plan = admin_sub.add_parser("set-plan", help="move an organisation to a plan from OBSERVE_PLANS")
    set_plan.add_argument("--org-id", type=int, required=True)
    set_plan.add_argument("--plan", required=True)
    set_plan.add_argument("--data-dir")
    set_plan.add_argument("--database-url")

    reseal = admin_sub.add_parser(
        "reseal", help="seal every stored secret again with the first key of OBSERVE_SECRET_KEYS (after a rotation)"
    )
    reseal.add_argument("--data-dir")
    reseal.add_argument("--database-url")
    return parser, sub


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the environment, command-line flags over them; logging set up."""
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Runs a core command; None when ``args`` names none of them."""
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "admin" and args.admin_command == "create-user":
        return asyncio.run(_create_user(settings, args))
    if args.command == "admin" and args.admin_command == "set-plan":
        return asyncio.run(_set_plan(settings, args))
    if args.command == "admin" and args.admin_command == "reseal":
        return asyncio.run(_reseal(settings))
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m core.cli``: the core commands only (``observe`` is gateway.cli)."""
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    code = run(args, settings_for(args))
    if code is None:
        parser.error("unknown command")
    return code or 0


async def _migrate(settings: Settings) -> int:
    from core.storage.db import Database
    from core.storage.migrate import migrate

    db = Database(settings.effective_database_url)
    try:
        await migrate(db)
    finally:
        await db.close()
    print("database is up to date")
    return 0


async def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from core.accounts.admin import create_owner
    from core.errors import ObserveError
    from core.storage.db import Database
    from core.storage.migrate import migrate

    db = Database(settings.effective_database_url)
    try:
        await migrate(db)
        result = await create_owner(
            db,
            email=args.email,
            name=args.name,
            org_name=args.org_name,
            password=args.password,
            mint_token=args.print_token,
            plan=settings.default_plan,
            exist_ok=args.exist_ok,
        )
    except ObserveError as err:
        detail = "; ".join(f"{f.path}: {f.message}" for f in err.fields) or err.message
        print(f"error: {err.name}: {detail}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    if args.print_token:
        print(result["token"])
    else:
        print(json.dumps(result))
    return 0


async def _set_plan(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import update

    from core.accounts.plans import parse_plans
    from core.storage import tables as t
    from core.storage.db import Database
    from core.storage.migrate import migrate

    if args.plan not in parse_plans(settings.plans):
        print(f"error: no plan {args.plan!r} in OBSERVE_PLANS", file=sys.stderr)
        return 1
    db = Database(settings.effective_database_url)
    try:
        await migrate(db)
        async with db.write() as conn:
            result = await conn.execute(update(t.orgs).where(t.orgs.c.id == args.org_id).values(plan=args.plan))
    finally:
        await db.close()
    if result.rowcount != 1:
        print(f"error: no organisation {args.org_id}", file=sys.stderr)
        return 1
    print(f"organisation {args.org_id} is on the {args.plan} plan")
    return 0


async def _reseal(settings: Settings) -> int:
    from core.accounts.admin import reseal
    from core.storage.db import Database
    from core.storage.migrate import migrate
    from core.storage.sealing import Sealer

    sealer = Sealer.from_settings(settings.secret_keys, settings.data_dir)
    db = Database(settings.effective_database_url)
    try:
        await migrate(db)
        changed = await reseal(db, sealer)
    finally:
        await db.close()
    print(f"{changed} secrets sealed again with key {sealer.primary!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
