"""`jukisync search`: the four-item search (name or reading, birth date, sex, address)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from jukisync.cli.common import fail, open_store, store_option
from jukisync.cli.querykit import load_policy, policy_option, requester_option, task_option
from jukisync.exitcodes import ExitCode
from jukisync.query.service import Denied, QueryService

__all__ = ["command"]

_SEXES = {"1": 1, "2": 2, "男": 1, "女": 2, "m": 1, "f": 2, "male": 1, "female": 2}


def _sex(value: str) -> int:
    sex = _SEXES.get(value.strip().lower())
    if sex is None:
        raise click.BadParameter(f"{value!r}: 1 (男, m) or 2 (女, f)", param_hint="--sex")
    return sex


@click.command(
    "search",
    epilog="""\b
Examples:
  jukisync search --store data/national --policy config/policy.example.toml \\
      --requester yamaguchi-ryoken --task B5-11 \\
      --name 'やまぐち たろう' --birth-date 1980-04-01 --sex 1 --address '山口市亀山町1-1'
  jukisync search ... --name '山口 太郎' --birth-date 1980-04-01 --sex 男 --json
  jukisync search ... --name 'ﾔﾏｸﾞﾁ ﾀﾛｳ' --birth-date 1980-04-01 --sex 1 --field name

The name may be written as registered (kanji, or the 通称) or as its reading in
katakana, hiragana or half-width kana; width, kana and spaces do not matter. Removed
records (除票) are candidates too. Exit codes: 0 found, 5 nothing found, 6 refused.
""",
)
@store_option
@policy_option
@requester_option
@task_option
@click.option("--name", required=True, help="Name or its reading (振り仮名).")
@click.option(
    "--birth-date",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Date of birth, YYYY-MM-DD.",
)
@click.option("--sex", required=True, help="1 or 男 (male), 2 or 女 (female).")
@click.option("--address", default=None, help="Address, to rank the candidates.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option(
    "--field",
    "fields",
    multiple=True,
    help="Only these fields (repeatable); default: all the task may see.",
)
@click.option("--json", "as_json", is_flag=True, help="The answer as one JSON object.")
def command(
    store_path: Path,
    policy_path: Path,
    requester: str,
    task: str,
    name: str,
    birth_date: dt.datetime,
    sex: str,
    address: str | None,
    limit: int,
    fields: tuple[str, ...],
    as_json: bool,
) -> None:
    """Search records by the four basic items (基本4情報), for a task the requester
    is granted; the answer holds only the fields the task may see, and is logged."""
    policy = load_policy("search", policy_path)
    service = QueryService(open_store("search", store_path), policy)
    answer = service.search(
        requester,
        task,
        name,
        birth_date.date(),
        _sex(sex),
        address,
        limit=limit,
        fields=list(fields) or None,
    )
    if isinstance(answer, Denied):
        if as_json:
            click.echo(json.dumps({"denied": answer.reason, "audit_id": answer.audit_id}))
        fail("search", ExitCode.DENIED, f"refused ({answer.reason}); logged as {answer.audit_id}")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "audit_id": answer.audit_id,
                    "total": answer.total,
                    "candidates": [
                        {"score": s, "record": r}
                        for s, r in zip(answer.scores, answer.records, strict=True)
                    ],
                },
                ensure_ascii=False,
            )
        )
    else:
        console = Console()
        columns = list(answer.records[0]) if answer.records else []
        table = Table(
            title=f"{answer.total} candidate(s), showing {len(answer.records)}",
            caption=f"audit entry {answer.audit_id}",
        )
        table.add_column("一致度", justify="right")
        for c in columns:
            table.add_column(c)
        for score, record in zip(answer.scores, answer.records, strict=True):
            table.add_row(
                f"{score:.2f}", *("" if record[c] is None else str(record[c]) for c in columns)
            )
        console.print(table)
    if not answer.records:
        raise SystemExit(int(ExitCode.NOT_FOUND))
