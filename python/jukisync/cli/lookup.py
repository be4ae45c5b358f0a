"""`jukisync lookup`: one record of a tier store by its 住民票コード."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.cells import cell_len

from jukisync.cli.common import fail, open_store, store_option
from jukisync.cli.exitcodes import ExitCode
from jukisync.codes import is_valid_juminhyo_code
from jukisync.messages import ChangeReason

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
""",
)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.argument("code")
def command(store_path: Path, as_json: bool, code: str) -> None:
    """Show the record of 住民票コード CODE, following code changes to the current one."""
    if not is_valid_juminhyo_code(code):
        fail("lookup", ExitCode.USAGE, f"{code!r} is not a 住民票コード (11 ASCII digits)")
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
