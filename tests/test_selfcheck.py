"""`jukisync selfcheck`: the scoring rules over their whole range, and the command on a
real aggregator (keys, registry, store, backups) against the real broker, with the
broker's default all-powerful user (refused least privilege: 0) and with a user
limited to jukisync's names (3)."""

from __future__ import annotations

import gc
import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from daemonkit import Net
from externaltools import rabbitmqctl, require_rabbitmqctl
from jukisync import _core, clock
from jukisync.cli import main
from jukisync.ops import selfcheck
from jukisync.trust import keys, storedir

pytestmark = pytest.mark.broker


# --- scoring rules ---------------------------------------------------------------------


@given(st.floats(0, 20 * 365), st.floats(0, 20 * 365))
def test_older_keys_never_score_higher(a: float, b: float) -> None:
    young, old = sorted((a, b))
    assert selfcheck.score_key_age(old)[0] <= selfcheck.score_key_age(young)[0]
    assert selfcheck.score_key_age(6 * 365.25)[0] == 0
    assert selfcheck.score_key_age(365)[0] == 3


@given(st.integers(0, 0o777))
def test_key_modes(mode: int) -> None:
    score, advice = selfcheck.score_key_mode(stat.S_IFREG | mode)
    assert (score == 3) == (mode & 0o177 == 0)
    assert (score == 0) == bool(mode & 0o006)
    assert bool(advice) == (score < 3)


@given(st.one_of(st.none(), st.floats(-10, 400)), st.floats(-10, 400))
def test_older_backups_never_score_higher(a: float | None, b: float) -> None:
    if a is None:
        assert selfcheck.score_backup_age(None)[0] == 0
        return
    young, old = sorted((a, b))
    assert selfcheck.score_backup_age(old)[0] <= selfcheck.score_backup_age(young)[0]


@given(st.lists(st.floats(-100, 1000), max_size=5), st.floats(-100, 1000))
def test_sooner_expiry_never_scores_higher(days: list[float], extra: float) -> None:
    assert (
        selfcheck.score_registry_expiry([*days, extra])[0]
        <= selfcheck.score_registry_expiry(days)[0]
    )


@given(st.floats(0, 1), st.floats(0, 1), st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_less_disk_never_scores_higher(f1: float, f2: float, b1: int, b2: int) -> None:
    need = 1 << 30
    low = selfcheck.score_disk(min(f1, f2), min(b1, b2), need)[0]
    assert low <= selfcheck.score_disk(max(f1, f2), max(b1, b2), need)[0]


# --- the command -------------------------------------------------------------------------


@pytest.fixture
def node(broker_url: str, tmp_path: Path) -> Iterator[Net]:
    net = Net(tmp_path, broker_url)
    [centre] = net.centres
    path = net.store_dir(centre)
    key = net.pairs[centre]
    store = _core.Store(
        str(path),
        role="aggregator",
        registry=net.registry(),
        centre_id=centre,
        centre_key=key.secret,
        centre_key_id=key.key_id,
    )
    storedir.write_trust(path, net.registry_bytes, net.root_public)
    del store
    gc.collect()
    yield net


def _check(net: Net, *extra: str) -> tuple[int, dict[str, dict[str, object]]]:
    [centre] = net.centres
    result = CliRunner().invoke(
        main, ["selfcheck", "--config", str(net.configs[centre]), "--json", *extra]
    )
    code, output = result.exit_code, result.output
    del result
    gc.collect()
    report = json.loads(output)
    assert report["total"] == sum(int(i["score"]) for i in report["items"])
    return code, {str(i["name"]): i for i in report["items"]}


def test_selfcheck_scores_an_aggregator(node: Net, tmp_path: Path) -> None:
    code, items = _check(node)
    assert set(items) == {"store check"} | {
        "key file permissions",
        "key age",
        "registry keys",
        "broker TLS",
        "broker least privilege",
        "audit chain",
        "store state",
        "last backup",
        "clock",
        "disk headroom",
    }
    assert items["key file permissions"]["score"] == 3
    assert items["key age"]["score"] == 3
    assert items["registry keys"]["score"] == 3
    assert items["broker TLS"]["score"] == 1  # plain amqp on this machine
    # The test broker's guest user may declare anything: a failing item, and exit 1.
    assert items["broker least privilege"]["score"] == 0
    assert items["audit chain"]["score"] == 3
    assert items["store state"]["score"] == 3
    assert items["store check"]["score"] == 3
    assert items["last backup"]["score"] == 0 and items["last backup"]["advice"]
    assert code == 1

    # Raise the backup item: a backup now.
    [centre] = node.centres
    backups = tmp_path / "backups"
    key_file = node.root / "keys" / f"{centre}-k1.key.json"
    result = CliRunner().invoke(
        main,
        ["backup", "--store", str(node.store_dir(centre)), "--dir", str(backups),
         "--key", str(key_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    del result
    gc.collect()
    _, items = _check(node, "--backups", str(backups))
    assert items["last backup"]["score"] == 3 and items["last backup"]["advice"] == ""

    # Lower the permissions item: the key readable by everyone.
    key_file.chmod(0o644)
    _, items = _check(node, "--no-broker")
    assert items["key file permissions"]["score"] == 0
    assert "broker least privilege" not in items


def test_backup_age_follows_the_clock(
    node: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    monkeypatch.setenv(clock.NOW_ENV, "2026-06-10T12:00")
    taken = clock.parse_instant("2026-06-01T12:00")
    (backups / f"{selfcheck.BACKUP_PREFIX}store-20260601T030000000000Z.tar").write_bytes(b"")
    assert selfcheck.backup_time(next(backups.iterdir())) == taken
    _, items = _check(node, "--no-broker", "--backups", str(backups))
    assert items["last backup"]["score"] == 1  # nine days old


def test_a_least_privilege_broker_user_scores_three(node: Net, broker_url: str) -> None:
    require_rabbitmqctl()
    user, password = f"selfcheck-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl("add_user", user, password)
    try:
        vhost = URL(broker_url).path.lstrip("/") or "/"
        names = rf"^{node.namespace.replace('.', '[.]')}jukisync[.].*"
        rabbitmqctl("set_permissions", "-p", vhost, user, names, names, names)
        [centre] = node.centres
        config = node.configs[centre]
        restricted = str(URL(broker_url).with_user(user).with_password(password))
        config.write_text(config.read_text().replace(node.url, restricted))
        _, items = _check(node)
        assert items["broker least privilege"]["score"] == 3, items["broker least privilege"]
    finally:
        rabbitmqctl("delete_user", user)


def test_an_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["selfcheck", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 3


def test_keys_generated_now_are_owner_only(tmp_path: Path) -> None:
    """The key files `keys generate` writes score 3 as they are."""
    secret, _ = keys.save(keys.generate("centre-x"), tmp_path)
    assert selfcheck.score_key_mode(secret.stat().st_mode)[0] == 3
