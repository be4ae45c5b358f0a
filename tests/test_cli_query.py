"""The query and audit commands: search, confirm, audit usage|disclose|anomalies|verify|
purge, with their exit codes."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import _core, clock
from jukisync.cli import main
from jukisync.exitcodes import ExitCode
from jukisync.query.audit import fiscal_year
from jukisync.trust import storedir
from jukisync.wire.messages import ChangeReason
from netkit import HAGI, YAMAGUCHI_CITY
from querykit import Registry, code, person, write_policy


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """(store directory with its trust files, policy file)."""
    reg = Registry(tmp_path)
    store = reg.open()
    hagi: dict[str, Any] = {"name": "萩 次郎", "kana": "ハギ ジロウ"}
    reg.apply(
        store,
        [person(YAMAGUCHI_CITY, 1, address="山口県山口市亀山町1番1号"), person(HAGI, 2, **hagi)],
    )
    reg.apply(store, [person(HAGI, 2, reason=ChangeReason.DEATH, **hagi)])
    path = tmp_path / "store"
    storedir.write_trust(path, reg.ring.signed_registry(), _core.public_key(reg.ring.root))
    del store
    gc.collect()
    return path, write_policy(tmp_path / "policy")


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    out = (result.exit_code, result.output)
    # LMDB allows one open environment per path in a process: let the command's go.
    del result
    gc.collect()
    return out


def common(setup: tuple[Path, Path], requester: str = "agency-a") -> list[str]:
    store, policy = setup
    return ["--store", str(store), "--policy", str(policy), "--requester", requester]


def test_search_finds_and_logs(setup: tuple[Path, Path]) -> None:
    args = [*common(setup), "--task", "T-ADDR", "--name", "やまぐち たろう"]
    status, out = run("search", *args, "--birth-date", "1980-04-01", "--sex", "男", "--json")
    assert status == 0, out
    answer = json.loads(out)
    assert answer["total"] == 1
    assert answer["candidates"][0]["record"] == {
        "juminhyo_code": code(YAMAGUCHI_CITY, 1),
        "name": "山口 太郎",
        "address": "山口県山口市亀山町1番1号",
        "status": "active",
    }
    status, out = run("search", *args, "--birth-date", "1999-01-01", "--sex", "1")
    assert status == ExitCode.NOT_FOUND, out
    status, out = run(
        "search",
        *common(setup),
        "--task",
        "T-NUM",
        "--name",
        "x",
        "--birth-date",
        "1980-04-01",
        "--sex",
        "1",
    )
    assert status == ExitCode.DENIED and "not_granted" in out
    status, out = run("search", *args, "--birth-date", "1980-04-01", "--sex", "x")
    assert status == ExitCode.USAGE


def test_confirm_inline_and_to_a_file(setup: tuple[Path, Path], tmp_path: Path) -> None:
    codes = [code(YAMAGUCHI_CITY, 1), code(HAGI, 2), "99999999999"]
    status, out = run("confirm", *common(setup), "--task", "T-FULL", *codes, "--json")
    assert status == 0, out
    rows = json.loads(out)["rows"]
    assert [r["status"] for r in rows] == ["current", "removed", "unknown"]
    listing = tmp_path / "codes.txt"
    listing.write_text("# recipients\n" + "\n".join(codes) + "\n\n")
    answer = tmp_path / "answer.csv"
    status, out = run(
        "confirm", *common(setup), "--task", "T-FULL", "--codes", str(listing), "--out", str(answer)
    )
    assert status == 0, out
    assert answer.read_text().splitlines()[2].startswith(f"{code(HAGI, 2)},removed,death,")
    status, out = run("confirm", *common(setup), "--task", "T-NOSTATUS", *codes)
    assert status == ExitCode.DENIED and "field_not_allowed" in out
    status, out = run(
        "confirm", *common(setup), "--task", "T-FULL", "--codes", str(tmp_path / "nope")
    )
    assert status == ExitCode.INPUT
    status, out = run("confirm", *common(setup), "--task", "T-FULL")
    assert status == ExitCode.USAGE


DAYTIME = "2026-06-10T10:00:00+09:00"  # a weekday morning in Japan, FY2026


def test_audit_commands(setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Every query of this test is logged at one daytime instant (JUKISYNC_NOW), so the
    # anomalies found do not depend on the hour the suite runs at.
    monkeypatch.setenv(clock.NOW_ENV, DAYTIME)
    store, policy = setup
    run(
        "search",
        *common(setup),
        "--task",
        "T-FULL",
        "--name",
        "山口太郎",
        "--birth-date",
        "1980-04-01",
        "--sex",
        "1",
    )
    run("confirm", *common(setup), "--task", "T-FULL", code(YAMAGUCHI_CITY, 1))
    for _ in range(3):
        run("confirm", *common(setup, "agency-n"), "--task", "T-FULL", code(YAMAGUCHI_CITY, 1))

    base = ["--store", str(store), "--policy", str(policy)]
    fy = fiscal_year(clock.now())
    assert fy == 2026
    status, out = run("audit", "usage", *base, "--fiscal-year", str(fy), "--json")
    assert status == 0, out
    report = json.loads(out)
    assert report["total"] == 2 and report["denied"] == [3]
    status, out = run(
        "audit", "usage", *base, "--from-year", str(fy - 1), "--to-year", str(fy), "--csv"
    )
    assert status == 0 and out.splitlines()[-1].endswith(",0,2,2")
    status, out = run("audit", "usage", *base)
    assert status == 0 and "合計" in out

    status, out = run(
        "audit", "disclose", *base, "--requester", "auditor", code(YAMAGUCHI_CITY, 1), "--json"
    )
    assert status == 0, out
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["search", "confirm"]

    status, out = run("audit", "anomalies", *base, "--json")
    assert status == ExitCode.FAILURE, out  # three refusals of agency-n within minutes
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["repeated_denials"]

    status, out = run("audit", "verify", "--store", str(store), "--json")
    assert status == 0, out
    checkpoint = json.loads(out)["checkpoint"]
    status, out = run("audit", "verify", "--store", str(store), "--checkpoint", checkpoint)
    assert status == 0 and out.startswith("ok:"), out
    status, out = run("audit", "verify", "--store", str(store), "--checkpoint", "1:" + "00" * 32)
    assert status == ExitCode.FAILURE and "checkpoint" in out
    status, out = run("audit", "verify", "--store", str(store), "--checkpoint", "nonsense")
    assert status == ExitCode.USAGE

    status, out = run("audit", "purge", *base, "--requester", "auditor", "--yes", "--json")
    assert status == 0 and json.loads(out)["purged"] == 0, out
    status, out = run("audit", "purge", *base, "--requester", "auditor")
    assert status == ExitCode.USAGE  # not a terminal, no --yes


@pytest.mark.parametrize(
    ("instant", "late"),
    [
        ("2026-06-10T02:30:00+09:00", True),
        ("2026-06-09T17:30:00+00:00", True),  # the same instant, given in UTC
        ("2026-06-10T12:00:00+09:00", False),
        ("2027-03-31T23:59:59", True),  # no offset: Japan time
    ],
)
def test_late_night_use_is_judged_in_japan_time(
    setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, instant: str, late: bool
) -> None:
    monkeypatch.setenv(clock.NOW_ENV, instant)
    store, policy = setup
    run("confirm", *common(setup), "--task", "T-FULL", code(YAMAGUCHI_CITY, 1))
    status, out = run(
        "audit", "anomalies", "--store", str(store), "--policy", str(policy), "--json"
    )
    kinds = [json.loads(line)["kind"] for line in out.splitlines()]
    assert ("late_night" in kinds) is late, out
    assert status == (ExitCode.FAILURE if late else 0)


def test_a_malformed_fixed_clock_is_a_config_error(
    setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(clock.NOW_ENV, "yesterday")
    status, out = run("confirm", *common(setup), "--task", "T-FULL", code(YAMAGUCHI_CITY, 1))
    assert status == ExitCode.CONFIG and "JUKISYNC_NOW" in out, out


def test_missing_store_and_bad_policy(setup: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = setup
    status, out = run("audit", "verify", "--store", str(tmp_path / "nowhere"))
    assert status == ExitCode.NOT_FOUND
    bad = tmp_path / "bad.toml"
    bad.write_text('catalogue = "x.toml"\nrequesters = []\nsurprise = 1\n')
    status, out = run("audit", "usage", "--store", str(store), "--policy", str(bad))
    assert status == ExitCode.CONFIG and "surprise" in out


def test_lookup_with_a_task_is_audited_and_filtered(setup: tuple[Path, Path]) -> None:
    args = [*common(setup), "--task", "T-ADDR", "--json", code(YAMAGUCHI_CITY, 1)]
    status, out = run("lookup", *args)
    assert status == 0, out
    found = json.loads(out.splitlines()[0])
    assert set(found) == {
        "juminhyo_code",
        "name",
        "address",
        "status",
        "redirected_from",
        "audit_id",
    }
    status, out = run("lookup", *common(setup), "--task", "T-NUM", code(YAMAGUCHI_CITY, 1))
    assert status == ExitCode.DENIED and "not_granted" in out
    status, out = run(
        "lookup", "--store", str(setup[0]), "--task", "T-ADDR", code(YAMAGUCHI_CITY, 1)
    )
    assert status == ExitCode.USAGE
    status, out = run("audit", "verify", "--store", str(setup[0]), "--json")
    assert json.loads(out)["entries"] == 2  # the answer and the refusal


# --- audit usage off a terminal, and year bounds (issue 11, items 8-9) ----------------------


@pytest.mark.parametrize("years", [1, 5, 12])
def test_usage_piped_never_cuts_numbers_or_labels(tmp_path: Path, years: int) -> None:
    from jukisync.query.audit import fiscal_year_label, fiscal_year_range

    reg = Registry(tmp_path)
    store = reg.open()
    first = 2010
    counts = {fy: 1_000_000 + 10_123 * (fy - first) for fy in range(first, first + years)}
    for fy, n in counts.items():
        store.audit_log(
            "confirm",
            requester="x",
            task="T-FULL",
            allowed=True,
            items=n,
            time=fiscal_year_range(fy)[0],
        )
    path = tmp_path / "store"
    storedir.write_trust(path, reg.ring.signed_registry(), _core.public_key(reg.ring.root))
    del store
    gc.collect()
    policy = write_policy(tmp_path / "policy")
    args = ["--store", str(path), "--policy", str(policy)]
    last = first + years - 1
    status, out = run("audit", "usage", *args, "--from-year", str(first), "--to-year", str(last))
    assert status == 0, out
    assert "…" not in out
    for fy, n in counts.items():
        assert fiscal_year_label(fy) in out
        assert f"{n:,}" in out
    assert f"{sum(counts.values()):,}" in out
    # the task names and the tasks before their enactment (T-ADDR: 2020-04-01)
    assert "全項目を見る事務" in out and "住所等確認の事務" in out


@given(year=st.integers(min_value=-(10**6), max_value=10**6))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_every_year_option_is_bounded(setup: tuple[Path, Path], year: int) -> None:
    store, policy = setup
    base = ["--store", str(store), "--policy", str(policy)]
    valid = 1970 <= year <= 9998
    for option, extra in (
        ("--fiscal-year", []),
        ("--from-year", ["--to-year", "9998"]),
        ("--to-year", ["--from-year", "1970"]),
    ):
        status, out = run("audit", "usage", *base, option, str(year), *extra, "--csv")
        assert status == (0 if valid else ExitCode.USAGE), (option, out)
    day = f"{year:04d}-01-01" if 1 <= year <= 9999 else None
    if day is not None:
        for option in ("--since", "--until"):
            status, out = run("audit", "anomalies", *base, option, day, "--json")
            assert status in ((0, ExitCode.FAILURE) if valid else (ExitCode.USAGE,)), out


@pytest.mark.parametrize("command", ["disclose", "purge"])
def test_a_non_auditor_is_refused_with_exit_6_and_logged(
    setup: tuple[Path, Path], command: str
) -> None:
    store, policy = setup
    base = ["--store", str(store), "--policy", str(policy), "--requester", "agency-a"]
    extra = [code(YAMAGUCHI_CITY, 1)] if command == "disclose" else ["--yes"]
    status, out = run("audit", command, *base, *extra)
    assert status == ExitCode.DENIED, out
    assert "not an auditor" in out
    s = _core.Store(
        str(store),
        role="national",
        registry=storedir.load_registry(store),
        require_attestation=False,
    )
    last = s.audit_entries()[-1]
    assert (last.kind, last.requester, last.allowed) == (command, "agency-a", False)
    del s
    gc.collect()
