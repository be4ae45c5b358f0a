"""`jukisync outbox`: a municipality's outbox as an operator sees it.

`inspect` shows the chain head, the retained range, how many bundles wait for the
broker's confirm and the last bundle; `verify` decodes every retained bundle and open
update, checks signatures (with the config's signing key), hashes, sequence numbers,
the chain and the content rules, and names each bad entry (exit 1 when damaged).
Both only read: they may run beside a running publisher.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

import click

from jukisync.cli import reseed as reseed_cli
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.publisher.configured import PublisherConfigError, load_config
from jukisync.publisher.outbox import Outbox, OutboxError
from jukisync.publisher.outbox_check import inspect, verify
from jukisync.trust import keys

__all__ = ["command"]

_NAME = "outbox"


def _die(code: ExitCode, message: str) -> NoReturn:
    fail(_NAME, code, message)


config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Municipality config (role = "municipality"); names the outbox and the key.',
)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object.")


def _open(config_path: Path) -> tuple[Outbox, bytes]:
    try:
        loaded = load_config(config_path)
        pair = keys.load(loaded.signing_key)
    except PublisherConfigError as exc:
        _die(ExitCode.CONFIG, str(exc))
    except keys.KeyFileError as exc:
        _die(ExitCode.CONFIG, f"signing_key: {exc}")
    if not (Path(loaded.outbox) / "data.mdb").exists():
        _die(ExitCode.NOT_FOUND, f"outbox {loaded.outbox}: no outbox there")
    try:
        return Outbox(loaded.outbox, loaded.origin), pair.public_key
    except OutboxError as exc:
        _die(ExitCode.CONFIG, f"outbox: {exc}")


@click.group(
    _NAME,
    epilog="""\b
Examples:
  jukisync outbox inspect --config config/municipality.toml
  jukisync outbox verify --config config/municipality.toml --json
""",
)
def command() -> None:
    """A municipality's durable outbox: inspect it, verify it."""


@command.command(
    "inspect",
    epilog="""\b
Exit codes: 0 shown; 3 bad config; 5 no outbox at the configured path.
""",
)
@config_option
@json_option
def inspect_command(config_path: Path, as_json: bool) -> None:
    """Head, retained range, unconfirmed bundles and the last bundle of the outbox."""
    outbox, _ = _open(config_path)
    try:
        summary = inspect(outbox)
    finally:
        outbox.close()
    if as_json:
        click.echo(json.dumps(asdict(summary)))
        return
    retained = (
        f"seq {summary.retained_from_seq}-{summary.retained_to_seq}"
        if summary.retained_bundles
        else "none"
    )
    rows = [
        ("origin", summary.origin),
        ("head", f"seq {summary.head_seq}  {summary.head_hash}"),
        ("next seq", str(summary.next_seq)),
        ("open updates", str(summary.open_updates)),
        ("retained", f"{summary.retained_bundles} bundles, {retained}"),
        ("unconfirmed", f"{summary.unconfirmed_bundles} bundles"),
    ]
    if summary.last_bundle is not None:
        last = summary.last_bundle
        rows.append(("last bundle", ", ".join(f"{k} {v}" for k, v in last.items())))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@command.command(
    "verify",
    epilog="""\b
Exit codes: 0 sound; 1 damaged (each bad entry named); 3 bad config or key;
5 no outbox at the configured path.
""",
)
@config_option
@json_option
def verify_command(config_path: Path, as_json: bool) -> None:
    """Decode and check every retained bundle and open update; name each bad one."""
    outbox, public_key = _open(config_path)
    try:
        damage = verify(outbox, public_key)
        checked = len(outbox.raw_bundles()), len(outbox.raw_open())
    finally:
        outbox.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not damage,
                    "bundles": checked[0],
                    "open_updates": checked[1],
                    "damage": [{"where": d.where, "problem": d.problem} for d in damage],
                },
                ensure_ascii=False,
            )
        )
    else:
        for d in damage:
            click.echo(str(d))
        verdict = f"{len(damage)} problems" if damage else "sound"
        click.echo(
            f"jukisync {_NAME}: {checked[0]} bundles and {checked[1]} open updates checked: "
            f"{verdict}",
            err=True,
        )
    if damage:
        raise SystemExit(int(ExitCode.FAILURE))


# Rebuilding a lost or old outbox's chain head from a centre (issue 12), in its own
# module beside the readers above.
command.add_command(reseed_cli.command)
