"""The `jukisync` command: one module per subcommand, registered here."""

from __future__ import annotations

import importlib
import sys

import click

from jukisync import clock
from jukisync.exitcodes import ExitCode

__all__ = ["ExitCode", "main"]

# module name under jukisync.cli -> attribute holding the click command or group
_SUBCOMMANDS = [
    "keys",
    "gen",
    "demo",
    "lookup",
    "quarantine",
    "status",
    "check",
    "reconcile",
    "retention",
    "run",
    "publish",
    "outbox",
    "search",
    "confirm",
    "audit",
    "bench",
    "broker",
    "config",
    "snapshot",
    "bootstrap",
    "backup",
    "restore",
    "selfcheck",
]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run `jukisync COMMAND --help` for the options and examples of each command.",
)
@click.version_option(package_name="jukisync")
def main() -> None:
    """jukisync: replicate resident identity records (本人確認情報) from municipalities
    through aggregation centres to the national store.

    \b
    Examples:
      jukisync demo                       # the whole network in one process
      jukisync keys generate --out keys/  # a signing key pair
      jukisync gen --residents 10000 --changes 5000 --out changes.jsonl
      jukisync lookup --store data/national 12345678901

    \b
    Environment:
      JUKISYNC_NOW  fix the wall clock at an ISO 8601 time (Japan time without an
                    offset), for tests and for replaying a past day's reports
    """
    try:
        clock.now_us()
    except clock.ClockError as exc:
        click.echo(f"jukisync: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)


for _name in _SUBCOMMANDS:
    try:
        _module = importlib.import_module(f"jukisync.cli.{_name}")
    except ModuleNotFoundError as exc:  # a subcommand not built yet in this checkout
        if exc.name != f"jukisync.cli.{_name}":
            raise
        continue
    main.add_command(_module.command)
