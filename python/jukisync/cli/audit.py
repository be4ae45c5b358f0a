"""`jukisync audit`: the usage report, a resident's disclosure, anomalies, verifying the
hash chain and purging beyond retention."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import msgspec
from rich.table import Table

from jukisync import clock
from jukisync.cli.common import data_console, fail, open_store, store_option
from jukisync.cli.querykit import load_policy, policy_option, requester_option
from jukisync.exitcodes import ExitCode
from jukisync.query import audit as audit_mod
from jukisync.wire.codes import is_valid_juminhyo_code

__all__ = ["command"]


@click.group(
    "audit",
    epilog="""\b
Examples:
  jukisync audit usage --store data/national --policy config/policy.example.toml \\
      --fiscal-year 2026
  jukisync audit usage ... --from-year 2022 --to-year 2026 --csv > usage.csv
  jukisync audit disclose ... --requester auditor-1 12345678901
  jukisync audit anomalies ... --since 2026-04-01
  jukisync audit verify --store data/national --checkpoint 1234:9f86d0...
  jukisync audit purge ... --requester auditor-1 --yes
""",
)
def command() -> None:
    """Read the audit trail: every query, allowed or refused, is an entry of a
    hash-chained log in the store, written with its answer."""


# The log counts µs since 1970 (unsigned); datetime ends in 9999. FY N runs into N+1.
FIRST_YEAR = 1970
LAST_YEAR = 9998
FISCAL_YEAR = click.IntRange(FIRST_YEAR, LAST_YEAR)
DAY = click.DateTime(formats=["%Y-%m-%d"])


def _in_log_range(
    ctx: click.Context, param: click.Parameter, value: dt.datetime | None
) -> dt.datetime | None:
    if value is not None and not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise click.BadParameter(f"{value:%Y-%m-%d} is not within {FIRST_YEAR}..{LAST_YEAR}")
    return value


def _this_fiscal_year() -> int:
    return audit_mod.fiscal_year(clock.now())


@command.command(
    "usage",
    epilog="""\b
Examples:
  jukisync audit usage --store data/national --policy config/policy.example.toml \\
      --fiscal-year 2026
  jukisync audit usage ... --from-year 2010 --to-year 2014 --json

Uses (件数) per task and category per fiscal year (年度, April–March, Japan time,
labelled 令和8年度 etc.): one per lookup or search, n per batch of n codes.
""",
)
@store_option
@policy_option
@click.option("--fiscal-year", type=FISCAL_YEAR, help="One fiscal year, e.g. 2026 (令和8年度).")
@click.option("--from-year", type=FISCAL_YEAR, help="First fiscal year of a range.")
@click.option(
    "--to-year", type=FISCAL_YEAR, help="Last fiscal year of a range [default: this one]."
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV (one row per task, subtotals, total).")
@click.option("--json", "as_json", is_flag=True, help="JSON.")
def usage(
    store_path: Path,
    policy_path: Path,
    fiscal_year: int | None,
    from_year: int | None,
    to_year: int | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """The usage report, shaped like the prefecture's yearly table."""
    if fiscal_year is not None and (from_year is not None or to_year is not None):
        raise click.UsageError("--fiscal-year or --from-year/--to-year, not both")
    first = fiscal_year if fiscal_year is not None else from_year
    last = fiscal_year if fiscal_year is not None else to_year
    last = last if last is not None else _this_fiscal_year()
    first = first if first is not None else last
    if first > last:
        raise click.UsageError(f"--from-year {first} is after --to-year {last}")
    policy = load_policy("audit usage", policy_path)
    store = open_store("audit usage", store_path)
    report = audit_mod.usage(store, policy.catalogue, first, last)
    if as_json:
        click.echo(audit_mod.usage_json(report).decode())
    elif as_csv:
        click.echo(audit_mod.usage_csv(report), nl=False)
    else:
        data_console().print(usage_table(report))


@command.command(
    "disclose",
    epilog="""\b
Example:
  jukisync audit disclose --store data/national --policy config/policy.example.toml \\
      --requester auditor-1 12345678901

The disclosure itself is logged (kind "disclose"), touching the resident's record.
""",
)
@store_option
@policy_option
@requester_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one provision each.")
@click.argument("code")
def disclose(store_path: Path, policy_path: Path, requester: str, as_json: bool, code: str) -> None:
    """A resident's provision history: when, to whom, for which task (CODE may be the
    current 住民票コード or a former one; provisions under every code the resident
    has had are listed)."""
    if not is_valid_juminhyo_code(code):
        fail("audit disclose", ExitCode.USAGE, f"{code!r} is not a 住民票コード (11 digits)")
    policy = load_policy("audit disclose", policy_path)
    store = open_store("audit disclose", store_path)
    try:
        history = audit_mod.disclose(store, policy, code, auditor=requester)
    except audit_mod.NotAnAuditor as exc:
        fail("audit disclose", ExitCode.DENIED, f"{exc} (the refusal is logged)")
    if as_json:
        for p in history:
            click.echo(msgspec.json.encode(p).decode())
        return
    table = Table(title=f"{code}: {len(history)} provision(s)")
    for column in ("日時", "提供先", "事務", "種別", "監査ID"):
        table.add_column(column, overflow="fold")
    for p in history:
        who = f"{p.requester_name} ({p.requester})" if p.requester_name else p.requester
        what = f"{p.task} {p.task_name}" if p.task_name else p.task
        table.add_row(p.time, who, what, p.kind, str(p.audit_id))
    data_console().print(table)


@command.command(
    "anomalies",
    epilog="""\b
Examples:
  jukisync audit anomalies --store data/national --policy config/policy.example.toml
  jukisync audit anomalies ... --since 2026-04-01 --until 2026-05-01 --json

Thresholds come from the policy's [anomalies] section. Exit code 1 when anything
was flagged, 0 when nothing was.
""",
)
@store_option
@policy_option
@click.option("--since", type=DAY, callback=_in_log_range, help="From (Japan time).")
@click.option("--until", type=DAY, callback=_in_log_range, help="Before (Japan time).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one anomaly each.")
def anomalies(
    store_path: Path,
    policy_path: Path,
    since: dt.datetime | None,
    until: dt.datetime | None,
    as_json: bool,
) -> None:
    """Late-night use, mass single queries by one requester, repeated refusals."""
    policy = load_policy("audit anomalies", policy_path)
    store = open_store("audit anomalies", store_path)
    start = audit_mod.to_micros(since) if since is not None else None
    end = audit_mod.to_micros(until) if until is not None else None
    found = audit_mod.anomalies(store.audit_entries(start, end), policy.thresholds)
    if as_json:
        for a in found:
            click.echo(msgspec.json.encode(a).decode())
    else:
        table = Table(title=f"{len(found)} anomal{'y' if len(found) == 1 else 'ies'}")
        for column in ("kind", "requester", "from", "to", "count", "detail"):
            table.add_column(column, overflow="fold")
        for a in found:
            table.add_row(a.kind, a.requester, a.start, a.end, str(a.count), a.detail)
        data_console().print(table)
    if found:
        sys.exit(int(ExitCode.FAILURE))


def _checkpoint(value: str) -> tuple[int, bytes]:
    entry, _, digest = value.partition(":")
    try:
        parsed = int(entry), bytes.fromhex(digest)
    except ValueError:
        parsed = (0, b"")
    if len(parsed[1]) != 32:
        raise click.BadParameter(f"{value!r}: expected ID:HASH (64 hex digits)")
    return parsed


@command.command(
    "verify",
    epilog="""\b
Examples:
  jukisync audit verify --store data/national
  jukisync audit verify --store data/national --checkpoint 1234:9f86d081884c7d65...

A checkpoint (entry id and hash, as printed by this command and with each usage
report) kept outside the store proves the log up to it was not rewritten as a
whole. Exit code 1 when the chain is broken.
""",
)
@store_option
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    help="ID:HASH of an entry recorded earlier (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON.")
def verify(store_path: Path, checkpoints: tuple[str, ...], as_json: bool) -> None:
    """Walk the hash chain from the anchor to the head: detects an edited, deleted or
    reordered entry and a cut tail."""
    parsed = [_checkpoint(c) for c in checkpoints]
    store = open_store("audit verify", store_path)
    v = store.audit_verify(parsed or None)
    checkpoint = f"{v.last_id}:{v.head.hex()}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": v.ok,
                    "entries": v.entries,
                    "first_id": v.first_id,
                    "last_id": v.last_id,
                    "checkpoint": checkpoint,
                    "problems": [{"entry": i, "problem": p} for i, p in v.problems],
                }
            )
        )
    elif v.ok:
        click.echo(
            f"ok: {v.entries:,} entries ({v.first_id}..{v.last_id}); checkpoint {checkpoint}"
        )
    else:
        for entry, problem in v.problems:
            click.echo(f"entry {entry}: {problem}")
    if not v.ok:
        fail(
            "audit verify",
            ExitCode.FAILURE,
            f"the audit chain is broken ({len(v.problems)} problems)",
        )


@command.command(
    "purge",
    epilog="""\b
Examples:
  jukisync audit purge --store data/national --policy config/policy.example.toml \\
      --requester auditor-1 --yes
  jukisync audit purge ... --requester auditor-1 --years 7 --yes --json

Entries older than the retention period (the policy's [retention] years, 5 by
default) are removed, oldest first; the purge is logged and the rest still verifies.
""",
)
@store_option
@policy_option
@requester_option
@click.option("--years", type=click.IntRange(min=1), help="Retention [default: the policy's].")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="JSON.")
def purge(
    store_path: Path,
    policy_path: Path,
    requester: str,
    years: int | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Remove audit entries older than the retention period."""
    policy = load_policy("audit purge", policy_path)
    years = years if years is not None else policy.retention_years
    now = clock.now_us()
    cutoff = audit_mod.from_micros(audit_mod.retention_cutoff(now, years))
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal: pass --yes to purge")
        click.confirm(f"Remove the audit entries before {cutoff.isoformat()}?", abort=True)
    store = open_store("audit purge", store_path)
    try:
        result = audit_mod.purge(store, policy, years=years, requester=requester, now=now)
    except audit_mod.NotAnAuditor as exc:
        fail("audit purge", ExitCode.DENIED, f"{exc} (the refusal is logged)")
    report = {
        "purged": result.purged,
        "first_kept": result.first_kept,
        "anchor": result.anchor.hex(),
        "audit_id": result.audit_id,
        "before": cutoff.isoformat(),
    }
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(
            f"purged {result.purged:,} entries before {cutoff.isoformat()}; first kept "
            f"{result.first_kept}; logged as {result.audit_id}"
        )


def usage_table(report: audit_mod.UsageReport) -> Table:
    """The usage report as the seed document's table (rows by category and task,
    columns by month); the CSV and JSON forms are in `query.audit`."""
    table = Table(
        title=f"{report.authority} 本人確認情報の利用状況（利用件数）",
        caption=f"監査ログ checkpoint {report.checkpoint[0]}:{report.checkpoint[1]}",
    )
    # Never cut a number, label or name ("平成2…", "10,1…"): on a narrow terminal
    # cells wrap (fold), and off a terminal the console is as wide as the table
    # (jukisync.cli.common.data_console).
    table.add_column("区分", overflow="fold")
    table.add_column("コード", overflow="fold")
    table.add_column("事務", overflow="fold")
    for label in report.labels:
        table.add_column(label, justify="right", overflow="fold")
    table.add_column("合計", justify="right", overflow="fold")

    def cells(counts: Sequence[int], total: int) -> list[str]:
        return [f"{n:,}" for n in counts] + [f"{total:,}"]

    for cat in report.categories:
        for i, row in enumerate(cat.tasks):
            table.add_row(
                cat.name if i == 0 else "",
                row.task,
                row.name,
                *row.cells(report.fiscal_years),
                f"{row.total:,}",
            )
        if len(cat.tasks) > 1:
            table.add_row("", "", "小計", *cells(cat.counts, cat.total), style="bold")
        table.add_section()
    table.add_row("合計", "", "", *cells(report.counts, report.total), style="bold")
    return table
