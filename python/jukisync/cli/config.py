"""`jukisync config`: the configuration reference, generated from the config types."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from jukisync.cli.common import fail
from jukisync.config import reference as configdoc
from jukisync.exitcodes import ExitCode

__all__ = ["command"]


@click.group("config")
def command() -> None:
    """Node configuration files (TOML): their reference."""


@command.command(
    "reference",
    epilog="""\b
Examples:
  jukisync config reference                          # Markdown to stdout
  jukisync config reference --out docs/configuration.md
  jukisync config reference --check docs/configuration.md   # exit 1 if it drifted
  jukisync config reference --json | jq '.national[].path'

\b
Exit codes:
  0    written (or, with --check, up to date)
  1    --check: the file differs from the generated reference
  5    --check: the file does not exist
""",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the Markdown reference to this file instead of stdout.",
)
@click.option(
    "--check",
    "check_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Compare this file with the generated reference instead of writing.",
)
@click.option("--json", "as_json", is_flag=True, help="Every key per role as JSON.")
def reference(out: Path | None, check_path: Path | None, as_json: bool) -> None:
    """Every key of each role's config file: its type, default and meaning, generated
    from the msgspec types the loader decodes with (so it cannot drift)."""
    if as_json:
        data = {role: [dataclasses.asdict(k) for k in ks] for role, ks in configdoc.keys().items()}
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    text = configdoc.render()
    if check_path is not None:
        try:
            shipped = check_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            fail("config reference", ExitCode.NOT_FOUND, f"{check_path}: no such file")
        if shipped != text:
            fail(
                "config reference",
                ExitCode.FAILURE,
                f"{check_path} differs from the config types; regenerate it with "
                f"`jukisync config reference --out {check_path}`",
            )
        click.echo(f"{check_path}: up to date", err=True)
        return
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)
