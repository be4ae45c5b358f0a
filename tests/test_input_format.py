"""The documented input format: the shipped JSON Schema is the generated one, and
every example line of docs/input-format.md is accepted (one per reason)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from jukisync.cli import main
from jukisync.publisher.input import input_schema, parse_line
from jukisync.wire import codes
from jukisync.wire.messages import ChangeReason

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = re.compile(r"^### `(\w+)`.*?```json\n(.*?)\n```", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall((DOCS / "input-format.md").read_text(encoding="utf-8"))


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = json.loads((DOCS / "update.schema.json").read_text(encoding="utf-8"))
    assert shipped == input_schema(), (
        "regenerate: jukisync publish --print-schema > docs/update.schema.json"
    )


def test_print_schema_prints_it() -> None:
    result = CliRunner().invoke(main, ["publish", "--print-schema"])
    assert result.exit_code == 0 and json.loads(result.output) == input_schema()


def test_one_example_per_reason_and_every_reason_listed() -> None:
    assert [reason for reason, _ in examples()] == [r.value for r in ChangeReason]
    text = (DOCS / "input-format.md").read_text(encoding="utf-8")
    for reason in ChangeReason:
        assert f"| `{reason.value}` | {reason.label} |" in text


@pytest.mark.parametrize(("reason", "line"), examples())
def test_each_example_is_accepted(reason: str, line: str) -> None:
    update = parse_line(line.encode())
    assert update.reason.value == reason
    codes.validate_update(update, origin=update.municipality)
