"""`supportbot report` as an operator runs it: real process, real database, files written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from sandbox.telegram.media import sniff_image
from tests.conftest import Database
from tests.integration.test_cli import cli
from tests.report_fixtures import OCTOBER_RESPONSES, seed_october


async def test_report_prints_the_month_and_writes_csv_and_chart(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    tickets = await seed_october(database)
    env = {"DATABASE_URL": database_url}
    result = cli(
        "report", "--month", "2026-10", "--csv", "october.csv", "--png", "october.png",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "SLA report October 2026"
    assert "All                6    4.0   30.0  66.7%  83.3%" in lines
    assert " email             3    8.0   30.0  33.3%  66.7%" in lines
    assert " telegram          3    2.0    5.0 100.0% 100.0%" in lines
    assert " Report Sam        3    2.0    8.0  66.7% 100.0%" in lines
    assert "Breaches: 1" in lines
    assert "6 responses written to october.csv" in lines
    assert "chart written to october.png" in lines

    rows = list(csv.DictReader(io.StringIO((tmp_path / "october.csv").read_text("utf-8"))))
    assert [
        (int(r["ticket"]), r["plan"], r["channel"], r["agent"], float(r["business_hours"]))
        for r in rows
    ] == [
        (number, plan, channel, agent, hours)
        for number, (plan, channel, agent, hours) in zip(tickets, OCTOBER_RESPONSES, strict=True)
    ]
    assert [(r["within_6h"], r["within_24h"]) for r in rows][3] == ("no", "no")
    assert rows[0]["answered_at"] == "2026-10-02T12:00:00+00:00"
    kind, width, height = sniff_image((tmp_path / "october.png").read_bytes()) or ("", 0, 0)
    assert kind == "png" and width > 0 and height > 0


def test_report_of_an_empty_month_and_the_current_month(tmp_path: Path) -> None:
    empty = cli("report", "--month", "2026-01", cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.startswith("SLA report January 2026\n") and "Breaches: 0" in empty.stdout
    now = cli("report", cwd=tmp_path)
    assert now.returncode == 0, now.stderr
    assert "(so far, to " in now.stdout.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-13"], "there is no month '2026-13'"),
        (["--month", "last"], "expected a month as YYYY-MM"),
        (["--month", "2999-01"], "2999-01 has not begun yet"),
        (
            ["--month", "2026-10", "--csv", "missing/dir/out.csv"],
            "cannot write missing/dir/out.csv",
        ),
    ],
)
def test_report_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("report", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "missing").exists()
