"""`supportbot credits`: preview a month's SLA credits, and apply them with `--apply`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from accounts.credit_run import checks_uptime, configured_uptime, instatus_uptime
from accounts.credits import (
    PROMISE,
    Applied,
    CreditPlan,
    LineStatus,
    MonthNotOver,
    apply_credits,
    gives_credits,
    plan_credits,
    record_refusal,
)
from accounts.money import cents
from accounts.uptime import Uptime, UptimeError, credit_month, given
from supportbot import app
from supportbot.settings import notice_routes
from tickets.months import Month


def add_parser(commands: Any) -> None:
    """The `credits` subcommand and its options."""
    credits = commands.add_parser(
        "credits", help="preview (or --apply) a month's SLA credits for Pro accounts"
    )
    credits.add_argument("--month", required=True, help="the calendar month, YYYY-MM")
    source = credits.add_mutually_exclusive_group()
    source.add_argument("--uptime", metavar="PCT", help="the month's uptime in percent, e.g. 99.3")
    source.add_argument(
        "--uptime-file", type=Path, metavar="FILE", help="1-minute checks, CSV timestamp,ok"
    )
    source.add_argument("--instatus", type=Path, metavar="FILE", help="an Instatus JSON export")
    credits.add_argument(
        "--maintenance", type=Path, metavar="FILE", help="maintenance windows, CSV start,end"
    )
    credits.add_argument("--apply", action="store_true", help="write the credits (once each)")
    credits.add_argument("--json", action="store_true", help="machine-readable output")


def _uptime(args: argparse.Namespace, service: app.Service, month: Month) -> Uptime:
    if args.maintenance is not None and args.uptime_file is None:
        raise UptimeError("--maintenance goes with --uptime-file")
    if args.uptime is not None:
        return given(args.uptime)
    if args.uptime_file is not None:
        return checks_uptime(month, args.uptime_file, args.maintenance)
    if args.instatus is not None:
        return instatus_uptime(month, args.instatus)
    if service.settings.uptime is not None:
        return configured_uptime(service.settings.uptime, month)
    raise UptimeError(
        "no uptime given: use --uptime PCT, --uptime-file FILE or --instatus FILE "
        "(or set UPTIME_CHECKS_FILE / UPTIME_INSTATUS_FILE)"
    )


async def run(args: argparse.Namespace, service: app.Service) -> None:
    """Compute the plan from the uptime given; print it, and write it with --apply."""
    month = credit_month(args.month)
    applied = None
    try:
        uptime = _uptime(args, service, month)  # a bad file stops here, before any credit
        spends = (
            await service.billing.month_spends(month, service.clock())
            if gives_credits(uptime)
            else None
        )
        async with service.sessions.begin() as session:
            plan = await plan_credits(session, month, uptime, spends)
        if args.apply and plan.applies:
            applied = await apply_credits(
                service.sessions,
                plan,
                templates=service.templates,
                routes=notice_routes(service.settings),
                at=service.clock(),
                actor="cli",
                billing=service.billing,
            )
    except (UptimeError, MonthNotOver) as error:
        if args.apply:
            async with service.sessions.begin() as session:
                record_refusal(
                    session, month=month, reason=str(error)[:500], actor="cli", at=service.clock()
                )
        raise
    if args.json:
        print(json.dumps(_as_json(plan, applied), indent=2))
    else:
        _print(plan, applied, wanted_apply=args.apply)


def _as_json(plan: CreditPlan, applied: Applied | None) -> dict[str, Any]:
    return {
        "month": str(plan.month),
        "uptime": str(plan.uptime.percent),
        "uptime_detail": plan.uptime.detail,
        "gives_credits": plan.applies,
        "billing_data_final": plan.final,
        "billing_data_as_of": plan.as_of.isoformat() if plan.as_of else None,
        "accounts": [
            {
                "account_id": line.account_id,
                "email": line.email,
                "net_spend": str(line.net_spend),
                "credit": str(line.amount),
                "status": line.status.value,
            }
            for line in plan.lines
        ],
        "total_to_credit": str(plan.total()),
        "applied": None
        if applied is None
        else {
            "credited": [line.account_id for line in applied.credited],
            "total": str(applied.total),
            "already": applied.already,
        },
    }


def _print(plan: CreditPlan, applied: Applied | None, *, wanted_apply: bool) -> None:
    uptime = plan.uptime
    print(f"SLA credits for {plan.month} ({plan.month.label})")
    detail = f": {uptime.detail}" if uptime.detail else ""
    print(f"uptime {uptime.percent} % ({uptime.source}{detail})")
    if not plan.applies:
        print(f"The uptime is not below {PROMISE} %: no SLA credits for {plan.month}.")
        return
    if not uptime.complete:
        print("Note: the checks do not reach the month's last minute; missing minutes count down.")
    as_of = plan.as_of.strftime("%Y-%m-%d %H:%M UTC") if plan.as_of else "unknown"
    if plan.final:
        print(f"billing data of {plan.month}: final (as of {as_of})")
    else:
        print(
            f"billing data of {plan.month}: NOT final yet (as of {as_of}); credits applied now "
            "are provisional and are topped up once it is final"
        )
    if not plan.lines:
        print("No Pro account had a positive balance in the month: nobody to credit.")
        return
    width = max(len("account"), *(len(line.email) for line in plan.lines))
    print(f"\n{'account':<{width}}  {'net spend':>14}  {'credit':>10}  status")
    for line in plan.lines:
        print(
            f"{line.email:<{width}}  {cents(line.net_spend):>14}  {cents(line.amount):>10}  "
            f"{line.status.value}"
        )
    to_credit = plan.with_status(LineStatus.TO_CREDIT)
    print(
        f"\n{len(plan.lines)} Pro account(s) with money in the month: {len(to_credit)} to credit, "
        f"{cents(plan.total())} in all; {len(plan.with_status(LineStatus.TOP_UP))} to top up "
        f"({cents(plan.total(LineStatus.TOP_UP))}); {len(plan.with_status(LineStatus.CREDITED))} "
        f"credited already; {len(plan.with_status(LineStatus.NOTHING))} with nothing spent."
    )
    if applied is not None:
        print(
            f"Applied: {len(applied.credited)} account(s) credited, {cents(applied.total)} in all"
            + (
                f"; {applied.already} had just been credited by another run"
                if applied.already
                else ""
            )
            + "."
        )
    elif not wanted_apply and (to_credit or plan.with_status(LineStatus.TOP_UP)):
        print("This is a preview: add --apply to credit them.")
