"""`jukisync lookup`: one record of a tier store by its 住民票コード."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.cells import cell_len

from jukisync.cli.common import fail, open_store, store_option
from jukisync.cli.querykit import load_policy
from jukisync.exitcodes import ExitCode
from jukisync.query.service import Denied, QueryService
from jukisync.wire.codes import is_valid_juminhyo_code
from jukisync.wire.messages import ChangeReason

__all__ = ["command"]

_MAX_REDIRECTS = 8  # a code changed more often than this in a lifetime is a loop

_LABELS = {
    "juminhyo_code": "住民票コード",
    "status": "状態",
    "redirect_to": "新コード",
    "kojin_bango": "個人番号",
    "name": "氏名",
    "name_kana": "振り仮名",
    "former_surname": "旧氏",
    "alias": "通称",
    "birth_date": "生年月日",
    "sex": "性別",
    "address": "住所",
    "municipality": "市区町村",
    "reason": "異動事由",
    "changed_on": "異動年月日",
    "recorded_at": "記録時刻(µs)",
    "origin": "送信元",
    "seq": "連番",
}
_STATUS = {"active": "現存", "removed": "除票", "redirect": "コード変更済"}


def _describe(field: str, value: str | int | None) -> str:
    if value is None:
        return "-"
    if field == "status":
        return f"{value} ({_STATUS.get(str(value), '?')})"
    if field == "sex":
        return {1: "1 (男)", 2: "2 (女)"}.get(int(value), str(value))
    if field == "reason":
        try:
            return f"{value} ({ChangeReason(str(value)).label})"
        except ValueError:
            return str(value)
    return str(value)


@click.command(
    "lookup",
    epilog="""\b
Examples:
  jukisync lookup --store data/national 12345678901
  jukisync lookup --store data/centre-a --json 12345678901
  jukisync lookup --store data/national --policy config/policy.example.toml \\
      --requester yamaguchi-ryoken --task B5-11 12345678901

With --task (and --requester, --policy) the lookup is a purpose-bound query: refused
unless the task is granted (exit 6), answered with the task's fields only, and logged
in the store's audit trail like every query.
""",
)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--task", default=None, help="Query for this task (事務): audited, field-filtered.")
@click.option("--requester", envvar="JUKISYNC_REQUESTER", help="Who asks (with --task).")
@click.option(
    "--policy",
    "policy_path",
    envvar="JUKISYNC_POLICY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (with --task).",
)
@click.argument("code")
def command(
    store_path: Path,
    as_json: bool,
    task: str | None,
    requester: str | None,
    policy_path: Path | None,
    code: str,
) -> None:
    """Show the record of 住民票コード CODE, following code changes to the current one."""
    if not is_valid_juminhyo_code(code):
        fail("lookup", ExitCode.USAGE, f"{code!r} is not a 住民票コード (11 ASCII digits)")
    if task is not None:
        _audited(store_path, policy_path, requester, task, code, as_json)
        return
    store = open_store("lookup", store_path)
    chain: list[dict[str, str | int | None]] = []
    current: str | None = code
    while current is not None and len(chain) <= _MAX_REDIRECTS:
        record = store.get(current)
        if record is None:
            break
        chain.append(record.to_dict())
        current = record.redirect_to if record.status == "redirect" else None
    if not chain:
        fail("lookup", ExitCode.NOT_FOUND, f"no record with 住民票コード {code} in {store_path}")
    if current is not None:
        fail(
            "lookup",
            ExitCode.NOT_FOUND,
            f"{code}: redirect to {current}, which is not in the store",
        )
    if as_json:
        found: dict[str, object] = dict(chain[-1])
        found["redirected_from"] = [r["juminhyo_code"] for r in chain[:-1]]
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    for hop in chain[:-1]:
        click.echo(f"{hop['juminhyo_code']} → {hop['redirect_to']} (住民票コード変更)")
    # Labels are full-width Japanese: pad by display cells, not by characters.
    width = max(cell_len(label) for label in _LABELS.values())
    for field, value in chain[-1].items():
        label = _LABELS.get(field, field)
        padding = " " * (width - cell_len(label))
        click.echo(f"{label}{padding}  {_describe(field, value)}")


def _audited(
    store_path: Path,
    policy_path: Path | None,
    requester: str | None,
    task: str,
    code: str,
    as_json: bool,
) -> None:
    """The lookup as a purpose-bound query (jukisync.query): policy, fields, audit."""
    if requester is None or policy_path is None:
        raise click.UsageError("--task needs --requester and --policy")
    policy = load_policy("lookup", policy_path)
    answer = QueryService(open_store("lookup", store_path), policy).by_code(requester, task, code)
    if isinstance(answer, Denied):
        fail("lookup", ExitCode.DENIED, f"refused ({answer.reason}); logged as {answer.audit_id}")
    if not answer.records:
        fail("lookup", ExitCode.NOT_FOUND, f"no record with 住民票コード {code} in {store_path}")
    record = answer.records[0]
    if as_json:
        found: dict[str, object] = {**record, "redirected_from": answer.redirected_from}
        found["audit_id"] = answer.audit_id
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    if answer.redirected_from is not None:
        click.echo(f"{answer.redirected_from} → {record.get('juminhyo_code')} (住民票コード変更)")
    width = max(cell_len(label) for label in _LABELS.values())
    for field, value in record.items():
        label = _LABELS.get(field, field)
        click.echo(f"{label}{' ' * (width - cell_len(label))}  {_describe(field, value)}")
    click.echo(f"audit entry {answer.audit_id}", err=True)
