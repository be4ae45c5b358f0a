"""Key files, the signed registry and `jukisync keys` (jukisync.keys, jukisync.cli.keys)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nacl.exceptions
import nacl.signing
import pytest
from click.testing import CliRunner

from jukisync import _core, clock
from jukisync.cli import main
from jukisync.cli.keys import format_time, parse_time
from jukisync.exitcodes import ExitCode
from jukisync.trust import keys
from jukisync.wire.messages import KeyEntry, RegistryBody, SignedRegistry

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
YEAR = 365 * 24 * 3600 * 1_000_000


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pair() -> keys.KeyPair:
    return keys.generate("352012", created_at=T0)


@pytest.fixture
def root() -> keys.KeyPair:
    return keys.generate("root", key_id="root-2026", created_at=T0)


# --- generate -------------------------------------------------------------------------


def test_generate_makes_a_working_pair(pair: keys.KeyPair) -> None:
    assert pair.owner == "352012"
    assert len(pair.secret) == 32 and len(pair.public_key) == 32
    assert _core.public_key(pair.secret) == pair.public_key
    # Checked with an Ed25519 independent of _core.
    message = b"bundle body"
    nacl.signing.VerifyKey(pair.public_key).verify(message, pair.sign(message))
    assert pair.created_at == T0


def test_generate_default_key_id_is_owner_and_fingerprint() -> None:
    a = keys.generate("352012")
    b = keys.generate("352012")
    assert a.secret != b.secret
    assert a.key_id != b.key_id
    assert a.key_id.startswith("352012-")
    keys.validate_key_id(a.key_id)


@pytest.mark.parametrize("owner", ["352013", "35201", "", "../etc", "centre a", "-x"])
def test_generate_rejects_bad_owner(owner: str) -> None:
    with pytest.raises(ValueError, match="owner"):
        keys.generate(owner)


@pytest.mark.parametrize("key_id", ["", "../x", "a/b", ".hidden", "x" * 65, "鍵"])
def test_generate_rejects_bad_key_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        keys.generate("centre-a", key_id=key_id)


def test_repr_never_shows_the_secret(pair: keys.KeyPair) -> None:
    assert pair.secret.hex() not in repr(pair)
    assert pair.key_id in repr(pair)


# --- save / load ---------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path, pair: keys.KeyPair) -> None:
    secret_path, public_path = keys.save(pair, tmp_path / "keys")
    assert secret_path.name == f"{pair.key_id}.key.json"
    assert public_path.name == f"{pair.key_id}.pub.json"
    assert mode_of(secret_path) == 0o600
    assert keys.load(secret_path) == pair
    assert keys.load_public(public_path) == pair.public
    public_json = json.loads(public_path.read_text())
    assert set(public_json) == {"owner", "key_id", "public_key", "created_at"}
    assert pair.secret.hex() not in public_path.read_text()
    assert json.loads(secret_path.read_text())["secret"] == pair.secret.hex()
    assert not [p for p in secret_path.parent.iterdir() if p.name.startswith(".")]


def test_secret_is_0600_whatever_the_umask(tmp_path: Path, pair: keys.KeyPair) -> None:
    old = os.umask(0)
    try:
        secret_path, _ = keys.save(pair, tmp_path)
    finally:
        os.umask(old)
    assert mode_of(secret_path) == 0o600


def test_save_refuses_to_replace_a_key(tmp_path: Path, pair: keys.KeyPair) -> None:
    secret_path, _ = keys.save(pair, tmp_path)
    before = secret_path.read_bytes()
    other = keys.generate("352012", key_id=pair.key_id)
    with pytest.raises(FileExistsError):
        keys.save(other, tmp_path)
    assert secret_path.read_bytes() == before
    keys.save(other, tmp_path, overwrite=True)
    assert keys.load(secret_path) == other


def test_load_and_load_public_refuse_the_other_kind(tmp_path: Path, pair: keys.KeyPair) -> None:
    secret_path, public_path = keys.save(pair, tmp_path)
    with pytest.raises(keys.KeyFileError) as info:
        keys.load(public_path)
    assert info.value.field == "secret"
    with pytest.raises(keys.KeyFileError) as info:
        keys.load_public(secret_path)
    assert info.value.field == "secret"


def _edit(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**data, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


DROP = object()
Editor = Callable[[dict[str, Any]], bytes]


def as_json(**changes: Any) -> Editor:
    return lambda d: json.dumps(_edit(d, **changes)).encode()


BROKEN: list[tuple[str, Editor, str | None]] = [
    ("not json", lambda d: b"{owner: 352012", None),
    ("empty file", lambda d: b"", None),
    ("json array", lambda d: json.dumps(list(d.values())).encode(), None),
    ("missing owner", as_json(owner=DROP), "owner"),
    ("missing public_key", as_json(public_key=DROP), "public_key"),
    ("unknown field", as_json(zokugara="長女"), "zokugara"),
    ("created_at as text", as_json(created_at="yesterday"), "created_at"),
    ("negative created_at", as_json(created_at=-1), "created_at"),
    ("owner with bad check digit", as_json(owner="352013"), "owner"),
    ("owner as number", as_json(owner=352012), "owner"),
    ("key_id with a slash", as_json(key_id="../../etc/passwd"), "key_id"),
    ("secret not hex", as_json(secret="zz" * 32), "secret"),
    ("secret too short", as_json(secret="ab" * 31), "secret"),
    ("secret with spaces", as_json(secret=" ".join(["ab"] * 32)), "secret"),
    ("public_key too long", as_json(public_key="ab" * 33), "public_key"),
    ("public_key of another key", as_json(public_key="11" * 32), "public_key"),
]


@pytest.mark.parametrize(
    ("edit", "field"), [(e, f) for _, e, f in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_secret_key_files(
    tmp_path: Path, pair: keys.KeyPair, edit: Editor, field: str | None
) -> None:
    secret_path, _ = keys.save(pair, tmp_path)
    secret_path.write_bytes(edit(json.loads(secret_path.read_text())))
    with pytest.raises(keys.KeyFileError) as info:
        keys.load(secret_path)
    assert info.value.path == secret_path
    assert info.value.field == field
    assert str(secret_path) in str(info.value)
    if field is not None:
        assert field in str(info.value)


def test_broken_public_key_file(tmp_path: Path, pair: keys.KeyPair) -> None:
    _, public_path = keys.save(pair, tmp_path)
    data = json.loads(public_path.read_text())
    public_path.write_text(json.dumps({**data, "public_key": data["public_key"][:-2]}))
    with pytest.raises(keys.KeyFileError) as info:
        keys.load_public(public_path)
    assert (info.value.path, info.value.field) == (public_path, "public_key")


def test_secret_readable_by_others_is_refused(tmp_path: Path, pair: keys.KeyPair) -> None:
    secret_path, _ = keys.save(pair, tmp_path)
    secret_path.chmod(0o644)
    with pytest.raises(keys.KeyFileError, match="chmod 600") as info:
        keys.load(secret_path)
    assert info.value.field == "secret"
    assert keys.load(secret_path, check_permissions=False) == pair


def test_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.key.json"
    with pytest.raises(keys.KeyFileError, match="cannot read") as info:
        keys.load(path)
    assert info.value.path == path and info.value.field is None


# --- the registry -------------------------------------------------------------------------


def entries_for(*pairs: keys.KeyPair) -> list[KeyEntry]:
    return [
        p.public.entry(not_after=T0 + 6 * YEAR if i == 0 else None) for i, p in enumerate(pairs)
    ]


def test_build_registry_signs_with_the_root(root: keys.KeyPair, pair: keys.KeyPair) -> None:
    centre = keys.generate("centre-a", created_at=T0)
    data = keys.build_registry(entries_for(pair, centre), root.secret, 3, T0 + 5)
    signed = msgspec.msgpack.decode(data, type=SignedRegistry)
    nacl.signing.VerifyKey(root.public_key).verify(signed.body, signed.sig)
    body = msgspec.msgpack.decode(signed.body, type=RegistryBody)
    assert (body.version, body.issued_at) == (3, T0 + 5)
    assert [e.key_id for e in body.entries] == [pair.key_id, centre.key_id]
    assert body.entries[0].not_after == T0 + 6 * YEAR


def test_load_registry_with_the_core(
    tmp_path: Path, root: keys.KeyPair, pair: keys.KeyPair
) -> None:
    centre = keys.generate("centre-a", created_at=T0)
    path = tmp_path / "registry.bin"
    path.write_bytes(keys.build_registry(entries_for(pair, centre), root.secret, 1, T0))
    registry = keys.load_registry(path, root.public_key)
    assert registry.version == 1
    assert sorted(registry.owners()) == ["352012", "centre-a"]
    assert registry.key_for(pair.key_id) == ("352012", pair.public_key)
    assert registry.valid_at(pair.key_id, "352012", T0 + YEAR)
    assert not registry.valid_at(pair.key_id, "352012", T0 + 7 * YEAR)
    assert not registry.valid_at(pair.key_id, "centre-a", T0 + YEAR)
    assert keys.read_registry(path, root.public_key).entries == entries_for(pair, centre)


def test_tampered_registry_is_rejected(
    tmp_path: Path, root: keys.KeyPair, pair: keys.KeyPair
) -> None:
    path = tmp_path / "registry.bin"
    good = keys.build_registry(entries_for(pair), root.secret, 1, T0)
    signed = msgspec.msgpack.decode(good, type=SignedRegistry)
    # Swap in an attacker's key, keep the root's signature.
    body = msgspec.msgpack.decode(signed.body, type=RegistryBody)
    attacker = keys.generate("352012", created_at=T0)
    forged_body = msgspec.structs.replace(
        body, entries=[msgspec.structs.replace(body.entries[0], public_key=attacker.public_key)]
    )
    forged = msgspec.msgpack.encode(
        SignedRegistry(body=msgspec.msgpack.encode(forged_body), sig=signed.sig)
    )
    path.write_bytes(forged)
    with pytest.raises(_core.JukisyncError):
        keys.load_registry(path, root.public_key)
    with pytest.raises(keys.KeyFileError) as info:
        keys.read_registry(path, root.public_key)
    assert info.value.field == "sig"
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(root.public_key).verify(
            msgspec.msgpack.encode(forged_body), signed.sig
        )


@pytest.mark.parametrize("cut", [1, 10, 70])
def test_truncated_registry_is_rejected(
    tmp_path: Path, root: keys.KeyPair, pair: keys.KeyPair, cut: int
) -> None:
    path = tmp_path / "registry.bin"
    path.write_bytes(keys.build_registry(entries_for(pair), root.secret, 1, T0)[:-cut])
    with pytest.raises(_core.JukisyncError):
        keys.load_registry(path, root.public_key)
    with pytest.raises(keys.KeyFileError):
        keys.read_registry(path, root.public_key)


def test_registry_under_another_root_is_rejected(
    tmp_path: Path, root: keys.KeyPair, pair: keys.KeyPair
) -> None:
    path = tmp_path / "registry.bin"
    path.write_bytes(keys.build_registry(entries_for(pair), root.secret, 1, T0))
    other = keys.generate("root")
    with pytest.raises(_core.JukisyncError):
        keys.load_registry(path, other.public_key)
    with pytest.raises(keys.KeyFileError):
        keys.read_registry(path, other.public_key)


def _entry(key_id: str, owner: str = "352012", **changes: Any) -> KeyEntry:
    public = nacl.signing.SigningKey(key_id.encode().ljust(32, b"\0")[:32]).verify_key
    return msgspec.structs.replace(
        KeyEntry(owner=owner, key_id=key_id, public_key=bytes(public), not_before=T0), **changes
    )


@pytest.mark.parametrize(
    ("entries", "version", "match"),
    [
        ([], 1, "at least one"),
        ([_entry("a"), _entry("a", owner="352021")], 1, "twice"),
        ([_entry("a"), _entry("b", public_key=_entry("a").public_key)], 1, "share"),
        ([_entry("a", public_key=b"\1" * 31)], 1, "32 bytes"),
        ([_entry("a", not_after=T0)], 1, "not_after"),
        ([_entry("a", owner="352013")], 1, "owner"),
        ([_entry("a")], 0, "version"),
    ],
)
def test_build_registry_refuses_bad_entries(
    root: keys.KeyPair, entries: list[KeyEntry], version: int, match: str
) -> None:
    with pytest.raises(keys.RegistryContentError, match=match):
        keys.build_registry(entries, root.secret, version, T0)


# --- rotate ---------------------------------------------------------------------------------


def test_rotate_retires_the_old_key_when_the_new_one_starts() -> None:
    old, centre = _entry("352012-old"), _entry("centre-a-1", owner="centre-a")
    new = _entry("352012-new", not_before=T0 + 6 * YEAR)
    entries = [old, centre]
    rotated = keys.rotate(entries, "352012-old", new)
    assert entries == [old, centre]  # the input is not changed
    assert rotated == [msgspec.structs.replace(old, not_after=T0 + 6 * YEAR), centre, new]


def test_rotated_registry_switches_keys_at_the_boundary(root: keys.KeyPair) -> None:
    old = _entry("352012-old")
    switch = T0 + 6 * YEAR
    rotated = keys.rotate([old], "352012-old", _entry("352012-new", not_before=switch))
    registry = _core.KeyRegistry(
        keys.build_registry(rotated, root.secret, 2, switch), root.public_key
    )
    assert registry.version == 2
    assert registry.valid_at("352012-old", "352012", switch - 1)
    assert not registry.valid_at("352012-new", "352012", switch - 1)
    assert registry.valid_at("352012-new", "352012", switch + 1)
    assert not registry.valid_at("352012-old", "352012", switch + 1)


def test_rotate_shortens_a_later_expiry() -> None:
    old = _entry("352012-old", not_after=T0 + 10 * YEAR)
    rotated = keys.rotate([old], "352012-old", _entry("352012-new", not_before=T0 + YEAR))
    assert rotated[0].not_after == T0 + YEAR


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (_entry("o"), _entry("n", owner="352021", not_before=T0 + 1), "belongs to"),
        (_entry("o", revoked_at=T0 + 5), _entry("n", not_before=T0 + 10), "revoked"),
        (_entry("o"), _entry("n", not_before=T0), "must start after"),
        (_entry("o", not_after=T0 + 5), _entry("n", not_before=T0 + 10), "no valid key"),
        (_entry("o"), _entry("o", not_before=T0 + 10), "twice"),
    ],
)
def test_rotate_refuses(old: KeyEntry, new: KeyEntry, match: str) -> None:
    with pytest.raises(keys.RegistryContentError, match=match):
        keys.rotate([old], "o", new)


def test_rotate_unknown_key() -> None:
    with pytest.raises(KeyError):
        keys.rotate([_entry("a")], "b", _entry("c", not_before=T0 + 1))


# --- times in the CLI -------------------------------------------------------------------------


def test_parse_time() -> None:
    assert parse_time("2026-01-01T09:00") == T0  # no offset: Japan time
    assert parse_time("2026-01-01T00:00Z") == T0
    assert parse_time("2026-01-01T00:00:00+00:00") == T0
    assert parse_time(str(T0)) == T0
    assert format_time(T0) == "2026-01-01T09:00:00+09:00"
    assert parse_time(format_time(T0 + 7_000_000)) == T0 + 7_000_000


# --- the CLI ---------------------------------------------------------------------------------


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(main, ["keys", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def keydir(tmp_path: Path) -> dict[str, Path]:
    """Root, origin and centre key pairs generated through the CLI."""
    paths: dict[str, Path] = {}
    for owner in ("root", "352012", "centre-a"):
        result = run("generate", "--owner", owner, "--out", tmp_path / "keys", "--json")
        assert result.exit_code == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["owner"] == owner
        paths[owner] = Path(info["secret_file"])
        paths[owner + ".pub"] = Path(info["public_file"])
    return paths


def test_cli_generate(keydir: dict[str, Path]) -> None:
    pair = keys.load(keydir["352012"])
    assert pair.owner == "352012"
    assert keys.load_public(keydir["352012.pub"]) == pair.public
    assert mode_of(keydir["352012"]) == 0o600


def test_cli_generate_plain_output_and_refusal(tmp_path: Path) -> None:
    result = run("generate", "--owner", "352012", "--key-id", "k1", "--out", tmp_path)
    assert result.exit_code == 0
    assert f"{tmp_path / 'k1.key.json'}" in result.stdout
    assert "private" in result.stderr  # the reminder is a diagnostic, not data
    again = run("generate", "--owner", "352012", "--key-id", "k1", "--out", tmp_path)
    assert again.exit_code == ExitCode.USAGE
    assert "--force" in again.stderr
    forced = run("generate", "--owner", "352012", "--key-id", "k1", "--out", tmp_path, "--force")
    assert forced.exit_code == 0


def test_cli_generate_bad_owner(tmp_path: Path) -> None:
    result = run("generate", "--owner", "352013", "--out", tmp_path)
    assert result.exit_code == ExitCode.USAGE
    assert "352013" in result.stderr
    assert not list(tmp_path.iterdir())


def test_cli_show_key_never_prints_the_secret(keydir: dict[str, Path]) -> None:
    pair = keys.load(keydir["352012"])
    for path, kind in ((keydir["352012"], "secret"), (keydir["352012.pub"], "public")):
        result = run("show", path, "--json")
        assert result.exit_code == 0
        info = json.loads(result.stdout)
        assert info["kind"] == kind
        assert info["public_key"] == pair.public_key.hex()
        assert pair.secret.hex() not in result.output
        plain = run("show", path)
        assert pair.key_id in plain.stdout
        assert pair.secret.hex() not in plain.output


def test_cli_registry_show_and_rotate(tmp_path: Path, keydir: dict[str, Path]) -> None:
    reg = tmp_path / "registry.bin"
    root_pub = keys.load_public(keydir["root.pub"]).public_key
    result = run(
        "registry",
        "--root",
        keydir["root"],
        "--out",
        reg,
        "--prefectures",
        "centre-a=35,34",
        keydir["352012.pub"],
        keydir["centre-a.pub"],
    )
    assert result.exit_code == 0, result.stderr
    loaded = keys.load_registry(reg, root_pub)
    assert loaded.version == 1
    assert sorted(loaded.owners()) == ["352012", "centre-a"]

    # Rebuilding over an existing registry bumps its version.
    result = run("registry", "--root", keydir["root"], "--out", reg, keydir["352012.pub"])
    assert result.exit_code == 0, result.stderr
    assert keys.load_registry(reg, root_pub).version == 2

    shown = run("show", reg, "--root", keydir["root.pub"], "--json")
    assert shown.exit_code == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["verified"] is True and info["version"] == 2
    old_id = keys.load(keydir["352012"]).key_id
    assert [e["key_id"] for e in info["entries"]] == [old_id]

    unverified = run("show", reg)
    assert unverified.exit_code == 0
    assert "NOT verified" in unverified.stderr
    assert old_id in unverified.stdout

    new = run("generate", "--owner", "352012", "--out", tmp_path / "new", "--json")
    new_info = json.loads(new.stdout)
    # The switch is a year after today, whatever year the suite runs in.
    at = (clock.now() + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M")
    rotated = run(
        "rotate",
        "--root",
        keydir["root"],
        "--registry",
        reg,
        "--old",
        old_id,
        "--new",
        new_info["public_file"],
        "--at",
        at,
    )
    assert rotated.exit_code == 0, rotated.stderr
    body = keys.read_registry(reg, root_pub)
    switch = parse_time(at)
    assert body.version == 3
    assert [(e.key_id, e.not_before, e.not_after) for e in body.entries][1:] == [
        (new_info["key_id"], switch, None)
    ]
    assert body.entries[0].not_after == switch
    registry = keys.load_registry(reg, root_pub)
    assert registry.valid_at(old_id, "352012", switch - 1)
    assert registry.valid_at(new_info["key_id"], "352012", switch)


def test_cli_rotate_unknown_key(tmp_path: Path, keydir: dict[str, Path]) -> None:
    reg = tmp_path / "registry.bin"
    run("registry", "--root", keydir["root"], "--out", reg, keydir["352012.pub"])
    result = run(
        "rotate",
        "--root",
        keydir["root"],
        "--registry",
        reg,
        "--old",
        "nope",
        "--new",
        keydir["centre-a.pub"],
    )
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "nope" in result.stderr


def test_cli_tampered_registry(tmp_path: Path, keydir: dict[str, Path]) -> None:
    reg = tmp_path / "registry.bin"
    run("registry", "--root", keydir["root"], "--out", reg, keydir["352012.pub"])
    data = bytearray(reg.read_bytes())
    data[-1] ^= 0x01  # last byte of the root signature
    reg.write_bytes(bytes(data))
    shown = run("show", reg, "--root", keydir["root.pub"])
    assert shown.exit_code == ExitCode.CONFIG
    assert str(reg) in shown.stderr and "not signed by this root" in shown.stderr
    assert shown.stdout == ""
    # A rebuild without --version must not silently trust (or discard) the bad file.
    rebuilt = run("registry", "--root", keydir["root"], "--out", reg, keydir["352012.pub"])
    assert rebuilt.exit_code == ExitCode.CONFIG
    assert "--version" in rebuilt.stderr


def test_cli_broken_key_file_names_file_and_field(tmp_path: Path, keydir: dict[str, Path]) -> None:
    data = json.loads(keydir["root"].read_text())
    keydir["root"].write_text(json.dumps({**data, "secret": "xyz"}))
    result = run(
        "registry", "--root", keydir["root"], "--out", tmp_path / "r.bin", keydir["352012.pub"]
    )
    assert result.exit_code == ExitCode.CONFIG
    assert str(keydir["root"]) in result.stderr
    assert "secret" in result.stderr
    assert not (tmp_path / "r.bin").exists()


def test_cli_registry_refuses_a_secret_file_as_public_key(
    tmp_path: Path, keydir: dict[str, Path]
) -> None:
    result = run(
        "registry", "--root", keydir["root"], "--out", tmp_path / "r.bin", keydir["352012"]
    )
    assert result.exit_code == ExitCode.CONFIG
    assert ".pub.json" in result.stderr


@pytest.mark.parametrize("sub", ["generate", "registry", "rotate", "show"])
def test_cli_help_has_examples(sub: str) -> None:
    result = run(sub, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert f"jukisync keys {sub}" in result.stdout


def test_cli_registry_gives_keys_their_roles_and_centres_their_prefectures(
    tmp_path: Path, keydir: dict[str, Path]
) -> None:
    reg = tmp_path / "registry.bin"
    root_pub = keys.load_public(keydir["root.pub"]).public_key
    common = ("registry", "--root", keydir["root"], "--out", reg)
    missing = run(*common, keydir["352012.pub"], keydir["centre-a.pub"])
    assert missing.exit_code == ExitCode.USAGE and "--prefectures centre-a=" in missing.stderr
    bad = run(*common, "--prefectures", "centre-a=48", keydir["centre-a.pub"])
    assert bad.exit_code == ExitCode.USAGE, bad.stderr
    ok = run(*common, "--prefectures", "35,13", keydir["352012.pub"], keydir["centre-a.pub"])
    assert ok.exit_code == 0, ok.stderr
    registry = keys.load_registry(reg, root_pub)
    origin_key = keys.load_public(keydir["352012.pub"]).key_id
    centre_key = keys.load_public(keydir["centre-a.pub"]).key_id
    assert registry.role_of(origin_key) == ("origin", [])
    assert registry.role_of(centre_key) == ("centre", ["35", "13"])
    shown = run("show", reg, "--root", keydir["root.pub"], "--json")
    entries = json.loads(shown.stdout)["entries"]
    assert {e["role"] for e in entries} == {"origin", "centre"}
