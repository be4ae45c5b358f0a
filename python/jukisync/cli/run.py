"""`jukisync run --config FILE`: an aggregation centre or the national node as a daemon."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from jukisync import config as node_config
from jukisync import logs
from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode

__all__ = ["command"]

_NAME = "run"
_LEVELS = ["debug", "info", "warning", "error"]


@click.command(
    _NAME,
    epilog="""\b
Examples:
  jukisync run --config config/aggregator.toml
  jukisync run --config config/national.toml --wait      # start before the broker
  jukisync run --config config/aggregator.toml --log-format json 2>> centre.jsonl
  curl -s localhost:9464/healthz; curl -s localhost:9464/metrics
  kill -HUP $(pidof jukisync)   # reload trust.registry (new keys, rotations, revocations)
                                # and a centre's own rotated signing_key

\b
Exit codes:
  0    stopped by SIGTERM or SIGINT after a clean shutdown
  1    the node failed while running (store error, queue refused by the broker)
  3    bad config, key or trust files, store, HTTP address; topology refused
  7    broker unreachable within broker.connect_timeout_s (without --wait), or the
       store is in use by another daemon
  130  (SIGINT) / 143 (SIGTERM): a second signal during shutdown; exited at once
""",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Node config (TOML) with role = "aggregator" or "national".',
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the broker as long as it takes instead of giving up after "
    "broker.connect_timeout_s.",
)
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS),
    default="info",
    show_default=True,
    help="Diagnostics on stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    show_default=True,
    help="text, or json: one object per line (time with offset, level, logger, message) "
    "for log shippers.",
)
def command(config_path: Path, wait: bool, log_level: str, log_format: logs.LogFormat) -> None:
    """Run an aggregation centre or the national node over RabbitMQ until SIGTERM.

    An aggregator consumes its prefectures' bundles, verifies and applies them,
    attests and forwards them to national; the national node applies what the
    centres forward. Each delivery is acked only after its batch committed. SIGTERM or
    SIGINT stops consuming, finishes the batch in hand, commits and closes; a second
    signal exits at once (the broker redelivers whatever was not acked).
    """
    try:
        loaded = node_config.load(config_path)
    except node_config.ConfigError as exc:
        fail(_NAME, ExitCode.CONFIG, str(exc))
    if isinstance(loaded, node_config.MunicipalityConfig):
        fail(
            _NAME,
            ExitCode.CONFIG,
            f"{config_path}: role is municipality; use `jukisync publish --config` for it",
        )
    logs.configure(log_level, log_format)

    import uvloop  # only for this command: the others need no event loop of their own
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # no `*_created` series

    from jukisync.tier.daemon import Daemon, StartupError  # after the CLI is set up: no cycle

    daemon = Daemon(loaded, config_path=config_path)

    async def main() -> ExitCode:
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if daemon.stop_requested:
                sys.stderr.write(f"jukisync run: {name} again: exiting at once\n")
                sys.stderr.flush()
                os._exit(128 + signum)  # unacked deliveries go back to the queue
            logging.getLogger("jukisync.daemon").info("%s: stopping (again to exit at once)", name)
            daemon.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload_registry)
        return await daemon.run(wait=wait)

    try:
        code = uvloop.run(main())
    except StartupError as exc:
        fail(_NAME, exc.code, str(exc))
    if code != ExitCode.OK and daemon.node is not None and daemon.node.failure is not None:
        click.echo(f"jukisync {_NAME}: node failed: {daemon.node.failure}", err=True)
    sys.exit(int(code))
