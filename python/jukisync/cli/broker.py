"""`jukisync broker setup`: least-privilege RabbitMQ users, one per node, municipality,
agency and operator (jukisync.transport.brokerusers), created with `rabbitmqctl`."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import click

from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.transport import brokerusers
from jukisync.transport.brokerusers import Role, User

__all__ = ["command"]


@click.group("broker")
def command() -> None:
    """RabbitMQ set-up for jukisync (users and permissions)."""


def _users(role: Role, values: tuple[str, ...]) -> list[User]:
    # USER or USER=ID; a node's or agency's user is its id unless told otherwise.
    users = []
    for value in values:
        name, _, ident = value.partition("=")
        users.append(User(name=name, role=role, id=ident or name))
    return users


def _passwords(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        fail("broker setup", ExitCode.CONFIG, f"--passwords {path}: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        fail("broker setup", ExitCode.CONFIG, f"--passwords {path}: not valid TOML: {exc}")
    bad = sorted(k for k, v in data.items() if not isinstance(v, str) or not v)
    if bad:
        fail("broker setup", ExitCode.CONFIG, f"--passwords {path}: not a password: {bad}")
    return {k: str(v) for k, v in data.items()}


def _rabbitmqctl(tool: str, *args: str) -> str:
    done = subprocess.run(
        [tool, "-q", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        shown = brokerusers.shown(list(args))
        reason = (done.stderr or done.stdout).strip().splitlines()
        fail(
            "broker setup",
            ExitCode.UNAVAILABLE,
            f"{shown} failed (exit {done.returncode}): {reason[-1] if reason else ''}",
        )
    return done.stdout


def _names(tool: str, what: str, key: str) -> frozenset[str]:
    out = _rabbitmqctl(tool, what, "--formatter", "json")
    return frozenset(str(row[key]) for row in json.loads(out or "[]"))


@command.command(
    "setup",
    epilog="""\b
Examples:
  jukisync broker setup --vhost /jukisync --national national \\
      --centre centre-yamaguchi --municipality m352012=352012 \\
      --agency yamaguchi-ryoken --operator ops --passwords broker-passwords.toml --dry-run
  jukisync broker setup ... --passwords broker-passwords.toml      # apply (idempotent)

\b
--passwords is a TOML file of `user = "password"` lines (keep it 0600). The
commands are printed with the passwords hidden; rerunning sets the same state
again. Nodes log in as their node id (QueryClient expects replies from it), agencies
as their policy requester id.
""",
)
@click.option("--vhost", default="/", show_default=True, help="The virtual host.")
@click.option("--namespace", default="", help="Prefix of every exchange and queue name.")
@click.option("--national", multiple=True, metavar="USER[=ID]", help="The national node.")
@click.option("--centre", multiple=True, metavar="USER[=ID]", help="An aggregation centre.")
@click.option(
    "--municipality", multiple=True, metavar="USER=ORIGIN", help="A publisher (6-digit origin)."
)
@click.option("--agency", multiple=True, metavar="USER", help="A requester of queries.")
@click.option("--operator", multiple=True, metavar="USER", help="Reads the dead-letter queue.")
@click.option(
    "--passwords",
    "passwords_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help='TOML: user = "password" (required unless --dry-run).',
)
@click.option("--dry-run", is_flag=True, help="Print the rabbitmqctl commands; change nothing.")
@click.option("--rabbitmqctl", "tool", default="rabbitmqctl", show_default=True)
def setup(
    vhost: str,
    namespace: str,
    national: tuple[str, ...],
    centre: tuple[str, ...],
    municipality: tuple[str, ...],
    agency: tuple[str, ...],
    operator: tuple[str, ...],
    passwords_path: Path | None,
    dry_run: bool,
    tool: str,
) -> None:
    """Create (or update) the vhost and one user per role with least-privilege
    configure/write/read permissions."""
    users = [
        *_users(Role.NATIONAL, national),
        *_users(Role.CENTRE, centre),
        *_users(Role.MUNICIPALITY, municipality),
        *_users(Role.AGENCY, agency),
        *_users(Role.OPERATOR, operator),
    ]
    if not users:
        raise click.UsageError("name at least one user (--national, --centre, ... )")
    if passwords_path is None and not dry_run:
        raise click.UsageError("--passwords FILE is required (or --dry-run)")
    passwords = _passwords(passwords_path)
    if dry_run:
        passwords = {u.name: passwords.get(u.name, brokerusers.REDACTED) for u in users}
        existing_users: frozenset[str] = frozenset()
        existing_vhosts: frozenset[str] = frozenset()
    else:
        if shutil.which(tool) is None:
            fail("broker setup", ExitCode.UNAVAILABLE, f"{tool} not found on PATH")
        existing_users = _names(tool, "list_users", "user")
        existing_vhosts = _names(tool, "list_vhosts", "name")
    try:
        commands = brokerusers.plan(
            users,
            passwords,
            vhost=vhost,
            namespace=namespace,
            existing_users=existing_users,
            existing_vhosts=existing_vhosts,
        )
    except ValueError as exc:
        fail("broker setup", ExitCode.USAGE if dry_run else ExitCode.CONFIG, str(exc))
    for args in commands:
        click.echo(brokerusers.shown(args))
        if not dry_run:
            _rabbitmqctl(tool, *args)
