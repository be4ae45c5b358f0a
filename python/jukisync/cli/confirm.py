"""`jukisync confirm`: batch confirmation (一括提供) of many 住民票コード at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync.cli.common import fail, open_store, store_option
from jukisync.cli.querykit import load_policy, policy_option, requester_option, task_option
from jukisync.exitcodes import ExitCode
from jukisync.query.service import Denied, QueryService

__all__ = ["command"]


def _read_codes(path: Path) -> list[str]:
    """One code a line; blank lines and `#` comments skipped; '-' is stdin."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail("confirm", ExitCode.INPUT, f"cannot read {path}: {exc}")
    return [c for line in text.splitlines() if (c := line.split("#", 1)[0].strip())]


@click.command(
    "confirm",
    epilog="""\b
Examples:
  jukisync confirm --store data/national --policy config/policy.example.toml \\
      --requester yamaguchi-fukushi --task J04-2 12345678901 23456789012
  jukisync confirm ... --task J04-2 --codes recipients.txt --out answer.csv
  jukisync confirm ... --task J04-2 --codes - --json < recipients.txt

Status per code: current (現存), moved_out (転出), removed (死亡 etc., with the reason
and date when the task may see them), unknown; a changed code is followed and its new
code given. Answers larger than --inline-limit codes are written as CSV (to --out, or
confirm-<audit id>.csv here) and only a summary printed. Exit codes: 0 answered,
4 unreadable code file, 6 refused.
""",
)
@store_option
@policy_option
@requester_option
@task_option
@click.option(
    "--codes",
    "codes_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File of codes, one a line ('-' for stdin).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the answer here as CSV.",
)
@click.option("--inline-limit", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The answer (or its summary) as JSON.")
@click.argument("codes", nargs=-1)
def command(
    store_path: Path,
    policy_path: Path,
    requester: str,
    task: str,
    codes_file: Path | None,
    out: Path | None,
    inline_limit: int,
    as_json: bool,
    codes: tuple[str, ...],
) -> None:
    """Confirm the status of many residents in one request (a pension fund checking
    every recipient each payment period), answered by one pass of the Rust core and
    logged as one audit entry."""
    asked = list(codes) + (_read_codes(codes_file) if codes_file is not None else [])
    if not asked:
        raise click.UsageError("give codes as arguments or with --codes FILE")
    policy = load_policy("confirm", policy_path)
    # Larger answers go to confirm-<audit id>.csv in the current directory.
    service = QueryService(
        open_store("confirm", store_path), policy, out_dir=Path.cwd(), inline_limit=inline_limit
    )
    answer = service.confirm(requester, task, asked, out=out)
    if isinstance(answer, Denied):
        if as_json:
            click.echo(json.dumps({"denied": answer.reason, "audit_id": answer.audit_id}))
        fail("confirm", ExitCode.DENIED, f"refused ({answer.reason}); logged as {answer.audit_id}")
    summary: dict[str, object] = {
        "audit_id": answer.audit_id,
        "count": answer.count,
        "counts": answer.counts,
    }
    if answer.file is not None:
        summary["file"] = answer.file
        if as_json:
            click.echo(json.dumps(summary, ensure_ascii=False))
        else:
            click.echo(f"{answer.count:,} codes: {answer.counts}; answer in {answer.file}")
        click.echo(f"audit entry {answer.audit_id}", err=True)
        return
    rows = list(answer.rows(asked))
    if as_json:
        summary["rows"] = [
            {
                "code": r.code,
                "status": r.status,
                "reason": r.reason,
                "changed_on": r.changed_on,
                "new_code": r.new_code,
            }
            for r in rows
        ]
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    table = Table(caption=f"audit entry {answer.audit_id}")
    for column in ("住民票コード", "status", "reason", "changed_on", "new code"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.code, r.status, r.reason or "", r.changed_on or "", r.new_code or "")
    Console().print(table)
