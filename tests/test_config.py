"""Node configs: the shipped examples load; broken ones name file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukisync import config
from jukisync.config import AggregatorConfig, ConfigError, MunicipalityConfig, NationalConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("aggregator.toml", AggregatorConfig),
        ("national.toml", NationalConfig),
        ("municipality.toml", MunicipalityConfig),
    ],
)
def test_shipped_examples_load(name: str, kind: type) -> None:
    loaded = config.load(CONFIG_DIR / name)
    assert isinstance(loaded, kind)
    if isinstance(loaded, AggregatorConfig):
        assert loaded.prefectures == ["35", "13"]
        assert Path(loaded.store).is_absolute() and loaded.store.endswith("data/centre-east")
        assert loaded.broker.queue_type == "quorum"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


AGGREGATOR = """
role = "aggregator"
id = "centre-east"
prefectures = ["35"]
store = "store"
signing_key = "k.key"
[trust]
root_public_key = "root.pub"
registry = "registry.bin"
"""


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (AGGREGATOR + "zokugara = 1\n", ["zokugara"]),
        (AGGREGATOR.replace('["35"]', '["48"]'), ["prefectures[0]", "'48'"]),
        (AGGREGATOR.replace('["35"]', "[]"), ["prefectures"]),
        (AGGREGATOR + "[broker]\nprefetch = 0\n", ["broker.prefetch", "0"]),
        (AGGREGATOR + "[broker]\nqueue_type = 'stream'\n", ["broker.queue_type", "stream"]),
        (AGGREGATOR + "[http]\nport = 70000\n", ["http.port", "70000"]),
        (AGGREGATOR.replace('role = "aggregator"', 'role = "prefecture"'), ["role", "prefecture"]),
        (AGGREGATOR.replace('role = "aggregator"', ""), ["role"]),
        (AGGREGATOR.replace('store = "store"', ""), ["store"]),
        ("role = 'municipality'\norigin = '352038'\nsigning_key='k'\noutbox='o'\n", ["352038"]),
        ("role = = 1", ["not valid TOML"]),
    ],
)
def test_broken_configs_name_the_field_and_value(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml")


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, AGGREGATOR))
    assert isinstance(loaded, AggregatorConfig)
    assert loaded.store == str(tmp_path / "store")
    assert loaded.trust.registry == str(tmp_path / "registry.bin")


@pytest.mark.parametrize(
    ("broker", "addresses"),
    [
        ("", ("amqp://guest:guest@127.0.0.1:5672/",)),
        ('url = "amqp://a:b@mq1/"', ("amqp://a:b@mq1/",)),
        ('url = ["amqp://a:b@mq1/", "amqp://a:b@mq2/"]', ("amqp://a:b@mq1/", "amqp://a:b@mq2/")),
        ('urls = ["amqp://a:b@mq2/", "amqp://a:b@mq1/"]', ("amqp://a:b@mq2/", "amqp://a:b@mq1/")),
    ],
)
def test_broker_addresses_one_url_or_a_cluster(
    tmp_path: Path, broker: str, addresses: tuple[str, ...]
) -> None:
    loaded = config.load(
        write(tmp_path, f"{AGGREGATOR}\n[broker]\n{broker}\nquorum_replicas = 3\n")
    )
    assert isinstance(loaded, AggregatorConfig)
    assert loaded.broker.addresses == addresses
    assert loaded.broker.quorum_replicas == 3


@pytest.mark.parametrize(
    ("broker", "fragment"),
    [
        ('url = "amqp://mq1/"\nurls = ["amqp://mq2/"]', "alternatives"),
        ("urls = []", "at least one"),
        ("quorum_replicas = 0", "quorum_replicas"),
    ],
)
def test_bad_broker_addresses_are_refused(tmp_path: Path, broker: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        config.load(write(tmp_path, f"{AGGREGATOR}\n[broker]\n{broker}\n"))
