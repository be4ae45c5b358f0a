"""What the query and audit subcommands share: the policy, the requester and task
options, and printing an answer."""

from __future__ import annotations

from pathlib import Path

import click

from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.query import policy as policy_mod
from jukisync.query.policy import Policy

__all__ = ["load_policy", "policy_option", "requester_option", "task_option"]

policy_option = click.option(
    "--policy",
    "policy_path",
    required=True,
    envvar="JUKISYNC_POLICY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (e.g. config/policy.example.toml) [env JUKISYNC_POLICY].",
)
requester_option = click.option(
    "--requester",
    required=True,
    envvar="JUKISYNC_REQUESTER",
    help="Who asks: a requester id of the policy (logged) [env JUKISYNC_REQUESTER].",
)
task_option = click.option(
    "--task",
    required=True,
    help="The task (事務) code the query is for, e.g. B5-11 (see the catalogue).",
)


def load_policy(command: str, path: Path) -> Policy:
    try:
        return policy_mod.load_policy(path)
    except policy_mod.PolicyError as exc:
        fail(command, ExitCode.CONFIG, str(exc))
