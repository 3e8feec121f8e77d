"""The `supportbot` command: run the service, migrate, look at tickets, manage agents."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import select, update

from accounts.importer import import_file
from accounts.money import cents
from accounts.payouts import payout_list, write_csv
from mail.imap import ImapIntake
from supportbot import app, credits_command, db
from supportbot.added_commands import added_commands
from supportbot.settings import Settings, SettingsError, load_settings
from tickets import queue
from tickets.agents import add_agent, remove_agent
from tickets.errors import SupportbotError
from tickets.model import MAX_ROW_ID, QueueEntry, Role
from tickets.rendering import when
from tickets.reports import monthly
from tickets.reports.chart import render_png
from tickets.reports.figures import InvalidMonth, Month
from tickets.tables import Quarantined

EXIT_USAGE = 2
MAX_TELEGRAM_ID = 2**63 - 1  # Telegram user ids are BIGINT columns


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line instead of argparse's usage block.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="supportbot", description="A support desk that lives in Telegram.")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="settings file read before the environment (default: ./.env)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("run", help="run the configured channels and the outbox worker")
    for name, added in added_commands().items():
        commands.add_parser(name, help=added.help)

    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="action", required=True, parser_class=_Parser)
    database_commands.add_parser("upgrade", help="apply pending migrations")
    database_commands.add_parser("current", help="show the schema revision")

    tickets = commands.add_parser("tickets", help="look at tickets")
    ticket_commands = tickets.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = ticket_commands.add_parser("list", help="list tickets")
    listing.add_argument(
        "--status",
        choices=["open", "waiting", "closed", "all"],
        default="open",
        help="open (default), waiting on us in queue order, closed, or all",
    )
    listing.add_argument("--limit", type=_positive, default=100)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = ticket_commands.add_parser("show", help="one ticket with its messages")
    show.add_argument("number", type=_ticket_number)
    show.add_argument("--json", action="store_true", help="machine-readable output")

    mail = commands.add_parser("mail", help="the email channel")
    mail_commands = mail.add_subparsers(dest="action", required=True, parser_class=_Parser)
    quarantine = mail_commands.add_parser("quarantine", help="mail that could not be processed")
    quarantine_commands = quarantine.add_subparsers(
        dest="step", required=True, parser_class=_Parser
    )
    quarantine_commands.add_parser("list", help="what is set aside, newest first")
    retry = quarantine_commands.add_parser("retry", help="take a set-aside mail in again")
    retry.add_argument("id", type=_positive)

    accounts = commands.add_parser("accounts", help="customer accounts and their ledger")
    account_commands = accounts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    loading = account_commands.add_parser(
        "import", help="load or update accounts, payments and usage from a billing export"
    )
    loading.add_argument("file", type=Path, help="a CSV or JSON export (see README, Accounts)")
    loading.add_argument(
        "--format", choices=["csv", "json"], help="default: from the suffix (.csv, else JSON)"
    )
    _payout_commands(commands)
    report = commands.add_parser("report", help="SLA report of a month: text, CSV, chart")
    report.add_argument(
        "--month", type=_month, default=None, help="YYYY-MM (default: this month so far)"
    )
    report.add_argument("--csv", type=Path, help="write one row per response to this file")
    report.add_argument("--png", type=Path, help="write the chart to this PNG file")

    agents = commands.add_parser("agents", help="who may work the queue")
    agent_commands = agents.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = agent_commands.add_parser("add", help="allow a Telegram user to act as an agent")
    add.add_argument("telegram_id", type=_telegram_id)
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    add.add_argument("--name", default="", help="shown to other agents")
    listing = agent_commands.add_parser("list", help="list agents")
    listing.add_argument("--json", action="store_true")
    remove = agent_commands.add_parser("remove", help="take a user off the allowlist")
    remove.add_argument("telegram_id", type=_telegram_id)
    credits_command.add_parser(commands)
    return parser


def _payout_commands(commands: Any) -> None:
    payouts = commands.add_parser("payouts", help="refund payouts, for finance")
    steps = payouts.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = steps.add_parser("list", help="payouts oldest first")
    listing.add_argument("--status", choices=["pending", "sent", "all"], default="all")
    export = steps.add_parser("export", help="payouts as CSV")
    export.add_argument("--csv", type=Path, required=True, metavar="FILE", help="'-' for stdout")
    export.add_argument("--status", choices=["pending", "sent", "all"], default="all")
    mark = steps.add_parser("mark-sent", help="record a payout as sent; the customer is told")
    mark.add_argument("id", type=_positive)
    mark.add_argument("tx_hash")


async def _payouts(service: app.Service, args: argparse.Namespace) -> None:
    if args.action == "mark-sent":
        print(await service.payouts.mark_sent(args.id, args.tx_hash, actor="cli"))
        return
    async with service.sessions() as session:
        rows = await payout_list(session, None if args.status == "all" else args.status)
    if args.action == "export":
        if str(args.csv) == "-":
            write_csv(rows, sys.stdout)
        else:
            with args.csv.open("w", newline="", encoding="utf-8") as out:
                write_csv(rows, out)
            print(f"{len(rows)} payouts written to {args.csv}")
        return
    if not rows:
        print("no payouts")
    for p in rows:
        sent = f"sent {when(p.sent_at)} {p.tx_hash}" if p.sent_at else "pending"
        print(
            f"{p.id:>5}  {when(p.created_at)}  {cents(p.amount_usd):>10} {p.currency:<6} "
            f"{p.chain:<10} {p.wallet}  #{p.ticket or '—'} {p.account}  {sent}"
        )


def _positive(raw: str, largest: int = MAX_ROW_ID) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {raw!r}") from None
    if not 1 <= value <= largest:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {largest}, got {raw!r}")
    return value


def _ticket_number(raw: str) -> int:
    try:
        return _positive(raw.removeprefix("#"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a ticket number from 1 to {MAX_ROW_ID}, such as 42, got {raw!r}"
        ) from None


def _month(raw: str) -> Month:
    try:
        return Month.parse(raw)
    except InvalidMonth as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _telegram_id(raw: str) -> int:
    try:
        return _positive(raw, MAX_TELEGRAM_ID)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a numeric Telegram user id (1 to {MAX_TELEGRAM_ID}), got {raw!r}"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _print_entries(entries: Sequence[QueueEntry]) -> None:
    if not entries:
        print("no tickets")
        return
    print(
        f"{'#':>6}  {'state':<11} {'plan':<5} {'channel':<8} {'due':<26} {'assignee':<12} customer"
    )
    for e in entries:
        due = when(e.due_at) if e.due_at else "—"
        print(
            f"{e.ticket:>6}  {e.urgency.value:<11} {e.plan.value:<5} {e.channel.value:<8} "
            f"{due:<26} {(e.assignee or '—')[:12]:<12} {e.customer}"
            + (f" · {e.subject}" if e.subject else "")
        )


async def _with_service(settings: Settings, job: Callable[[app.Service], Awaitable[None]]) -> None:
    async with app.build(settings) as service:
        await job(service)


async def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await app.run(settings, stop)
        return 0
    added = added_commands()
    if args.command in added:
        await added[args.command].run()
        return 0
    if args.command == "db":
        async with db.open_engine(settings.database_url) as engine:
            if args.action == "upgrade":
                await db.upgrade(engine)
            current, head = await db.revisions(engine)
            print(f"schema revision {current or 'none'} (newest {head})")
        return 0
    service_jobs: dict[str, Callable[[app.Service], Awaitable[None]]] = {
        "mail": lambda service: _quarantine(service, args),
        "payouts": lambda service: _payouts(service, args),
        "credits": lambda service: credits_command.run(args, service),
        "report": lambda service: _report(service, args),
        "accounts": lambda service: _import_accounts(service, args),
    }
    if args.command in service_jobs:
        await _with_service(settings, service_jobs[args.command])
        return 0

    async def job(service: app.Service) -> None:
        now = service.clock()
        async with service.sessions.begin() as session:
            if args.command == "tickets" and args.action == "list":
                entries = await queue.ticket_list(
                    session, service.policy, now, status=args.status, limit=args.limit
                )
                _print_json([asdict(e) for e in entries]) if args.json else _print_entries(entries)
            elif args.command == "tickets":
                view = await queue.ticket_view(session, service.policy, args.number, now)
                if args.json:
                    _print_json(asdict(view))
                else:  # the same text agents get from /transcript
                    print(service.templates.render("agents/transcript", view=view))
            elif args.action == "add":
                created = await add_agent(
                    session, args.telegram_id, Role(args.role), args.name, at=now, actor="cli"
                )
                print(f"{'added' if created else 'updated'} {args.telegram_id} as {args.role}")
            elif args.action == "list":
                agents = await queue.agent_list(session)
                if args.json:
                    _print_json([asdict(a) for a in agents])
                for a in agents if not args.json else ():
                    print(f"{a.telegram_id:>14}  {a.role.value:<6} {a.name}")
                if not agents and not args.json:
                    print("no agents yet: add one with `supportbot agents add TELEGRAM_ID`")
            else:
                await remove_agent(session, args.telegram_id, at=now, actor="cli")
                print(f"removed {args.telegram_id}")

    await _with_service(settings, job)
    return 0


async def _quarantine(service: app.Service, args: argparse.Namespace) -> None:
    if args.step == "list":
        async with service.sessions() as session:
            rows = (
                await session.scalars(
                    select(Quarantined).order_by(Quarantined.id.desc()).limit(200)
                )
            ).all()
        if not rows:
            print("nothing is in quarantine")
        for each in rows:
            state = f"retaken {when(each.resolved_at)}" if each.resolved_at else "waiting"
            print(
                f"{each.id:>5}  {each.source:<8} {each.reference:<20} {when(each.received_at)}  "
                f"{state}\n       {each.error}"
            )
        return
    settings = service.settings
    async with service.sessions() as session:
        found = await session.get(Quarantined, args.id)
    if found is None:
        raise SupportbotError(f"there is no quarantined message {args.id}")
    row = found
    if row.resolved_at is not None:
        raise SupportbotError(f"quarantined message {args.id} was already taken in")
    if row.source != "imap" or settings.imap is None or not settings.support_address:
        raise SupportbotError(
            f"quarantined message {args.id} came from {row.source}; only mail can be retried, "
            "with the IMAP settings configured"
        )
    intake = ImapIntake(settings.imap, service.desk, service.sessions, settings.support_address)
    try:
        result = await intake.retake(row.reference, row.raw)
    except Exception as error:
        async with service.sessions.begin() as session:
            await session.execute(
                update(Quarantined)
                .where(Quarantined.id == row.id)
                .values(retries=Quarantined.retries + 1, error=f"{type(error).__name__}: {error}")
            )
        raise SupportbotError(f"quarantined message {args.id} still fails: {error}") from None
    async with service.sessions.begin() as session:
        await session.execute(
            update(Quarantined).where(Quarantined.id == row.id).values(resolved_at=service.clock())
        )
    print(f"quarantined message {args.id} is now on ticket #{result.ticket}")


async def _import_accounts(service: app.Service, args: argparse.Namespace) -> None:
    path: Path = args.file
    progress = _progress_line if sys.stderr.isatty() else None
    try:
        report = await import_file(
            service.sessions,
            path,
            at=service.clock(),
            kind=args.format,
            progress=progress,
            templates=service.templates,
        )
    finally:
        if progress is not None:
            print(file=sys.stderr)
    print(f"{path.name}: {report.summary()}")


def _progress_line(done: int, total: int) -> None:
    share = done * 100 // total if total else 100
    print(
        f"\rimporting: {done:,}/{total:,} records ({share}%)", end="", file=sys.stderr, flush=True
    )


async def _report(service: app.Service, args: argparse.Namespace) -> None:
    report, rows = await monthly.load(
        service.sessions, service.policy, service.clock(), args.month, rows=args.csv is not None
    )
    print(monthly.report_text(service.templates, report))
    try:
        if args.csv is not None:
            args.csv.write_text(monthly.csv_text(rows, service.policy), encoding="utf-8")
            print(f"\n{len(rows)} responses written to {args.csv}")
        if args.png is not None:
            args.png.write_bytes(render_png(report))
            print(f"chart written to {args.png}")
    except OSError as error:
        raise SupportbotError(f"cannot write {error.filename}: {error.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `supportbot` command; errors are one line and exit status 2."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(env_file=args.env_file)
    except SettingsError as error:
        print(f"supportbot: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines contain the bot token
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return asyncio.run(_command(args, settings))
    except SupportbotError as error:
        print(f"supportbot: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"supportbot: cannot reach the database: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
