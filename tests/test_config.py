"""Node configs: the shipped examples load; broken ones name file, field and value."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

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


# --- unknown keys and secrets (issue 11, item 13) ------------------------------------------

_SECRET = "S3cret-pw-never-shown"
_ROLES = {
    "aggregator": (AggregatorConfig, "aggregator.toml"),
    "national": (NationalConfig, "national.toml"),
    "municipality": (MunicipalityConfig, "municipality.toml"),
}


def _sections(struct: type) -> list[tuple[str, list[str]]]:
    """("" for the top level, or the table's name) and the keys it may hold."""
    import msgspec.inspect as mi

    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    found = [("", [f.encode_name for f in info.fields])]
    for field in info.fields:
        t = field.type
        if isinstance(t, mi.UnionType):
            t = next((x for x in t.types if isinstance(x, mi.StructType)), t)
        if isinstance(t, mi.StructType):
            found.append((field.encode_name, [f.encode_name for f in t.fields]))
    return found


_CASES = [
    (role, section, key)
    for role, (struct, _) in _ROLES.items()
    for section, keys in _sections(struct)
    for key in keys
    if len(key) >= 4
]


def _with_secret(role: str) -> dict[str, object]:
    import tomllib

    raw = tomllib.loads((CONFIG_DIR / _ROLES[role][1]).read_text(encoding="utf-8"))
    broker = dict(raw.get("broker", {}))
    broker["url"] = f"amqp://node:{_SECRET}@127.0.0.1:5672/jukisync"
    raw["broker"] = broker
    return raw


def _dump(raw: dict[str, object]) -> str:
    # TOML for the values configs hold (JSON's scalars and arrays are TOML's).
    top = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
        for k, v in raw.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


@given(case=st.sampled_from(_CASES), data=st.data())
@settings(max_examples=150, deadline=None)
def test_an_unknown_key_suggests_the_nearest_and_never_shows_a_secret(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str, str], data: st.DataObject
) -> None:
    role, section, key = case
    i = data.draw(st.integers(min_value=0, max_value=len(key) - 2), label="position")
    typo = data.draw(
        st.sampled_from([key[:i] + key[i + 1 :], key[:i] + key[i + 1] + key[i] + key[i + 2 :]]),
        label="typo",
    )
    keys = dict(_sections(_ROLES[role][0]))[section]
    assume(typo not in keys)
    raw = _with_secret(role)
    table = raw if not section else dict(raw.get(section, {}))  # type: ignore[call-overload]
    table[typo] = 1
    if section:
        raw[section] = table
    path = tmp_path_factory.mktemp("cfg") / "node.toml"
    path.write_text(_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    message = str(exc.value)
    assert _SECRET not in message
    assert f"unknown field `{typo}`" in message, message
    meant = message.split("did you mean `")[1].split("`")[0]
    assert meant in keys
    ratio = difflib.SequenceMatcher(None, typo, meant).ratio()
    assert ratio >= difflib.SequenceMatcher(None, typo, key).ratio()


@given(
    role=st.sampled_from(sorted(_ROLES)),
    broken=st.sampled_from(
        [
            ("broker", "prefetch", -1),
            ("broker", "queue_type", "stream"),
            ("broker", "url", 7),
            ("broker", "connect_timeout_s", -1.0),
            ("broker", "key_file", "k.pem"),
            ("broker", "delivery_limit", 0),
            ("", "role", "prefecture"),
            ("", "zokugara", 1),
        ]
    ),
    password=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@/#?%"),
        min_size=6,
        max_size=24,
    ),
)
@settings(max_examples=100, deadline=None)
def test_no_config_message_shows_the_broker_password(
    tmp_path_factory: pytest.TempPathFactory,
    role: str,
    broken: tuple[str, str, object],
    password: str,
) -> None:
    section, key, value = broken
    raw = _with_secret(role)
    broker = dict(raw["broker"])  # type: ignore[call-overload]
    broker["url"] = f"amqp://node:{password}@127.0.0.1:5672/"
    raw["broker"] = broker
    table = raw if not section else dict(raw[section])  # type: ignore[call-overload]
    table[key] = value
    if section:
        raw[section] = table
    path = tmp_path_factory.mktemp("cfg") / "node.toml"
    path.write_text(_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert password not in str(exc.value), str(exc.value)


def test_redact_hides_url_passwords_and_secret_keys() -> None:
    from jukisync.config.errors import redact, redact_text

    assert redact_text("amqps://u:pw@h:5671/v and amqp://x:y@z/") == (
        "amqps://u:***@h:5671/v and amqp://x:***@z/"
    )
    assert redact({"url": "amqp://a:b@c/", "password": "pw", "n": [1]}) == {
        "url": "amqp://a:***@c/",
        "password": "***",
        "n": [1],
    }
