"""The golden vectors (tests/vectors/vectors.json) against msgspec, PyNaCl and _core.

The msgspec/PyNaCl checks need nothing compiled. The `_core` checks fail (never skip)
when the extension is not built: CI always builds it, so a skip would hide drift.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import nacl.exceptions
import nacl.signing
import pytest

from jukisync.wire import messages

VECTORS_DIR = Path(__file__).parent / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS_DIR / "vectors.json").read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = DATA["vectors"]
BY_NAME = {v["name"]: v for v in VECTORS}
TYPES: dict[str, type[msgspec.Struct]] = {
    "Update": messages.Update,
    "BundleBody": messages.BundleBody,
    "Envelope": messages.Envelope,
    "SignedRegistry": messages.SignedRegistry,
    "RegistryBody": messages.RegistryBody,
}


def of(expect: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS if v["expect"] == expect]


def ids(vector: dict[str, Any]) -> str:
    return str(vector["name"])


def decode(vector: dict[str, Any]) -> msgspec.Struct:
    return msgspec.msgpack.decode(bytes.fromhex(vector["bytes"]), type=TYPES[vector["type"]])


# --- JSON fields -> Struct, independent of the generator's own conversion --------------


def _unhex(t: msgspec.inspect.Type, value: Any) -> Any:
    """Turn the vectors' hex byte strings back into bytes, guided by the Struct types."""
    if value is None:
        return None
    if isinstance(t, msgspec.inspect.BytesType):
        return bytes.fromhex(value)
    if isinstance(t, msgspec.inspect.UnionType):
        (inner,) = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        return _unhex(inner, value)
    if isinstance(t, msgspec.inspect.ListType):
        return [_unhex(t.item_type, v) for v in value]
    if isinstance(t, msgspec.inspect.StructType):
        names = [f.encode_name for f in t.fields]
        # Every field present and in declaration order: that is what "fields" promises.
        assert list(value) == names
        return {f.encode_name: _unhex(f.type, value[f.encode_name]) for f in t.fields}
    return value


def from_fields(type_name: str, fields: dict[str, Any]) -> msgspec.Struct:
    cls = TYPES[type_name]
    return msgspec.convert(_unhex(msgspec.inspect.type_info(cls), fields), cls)


def hexify(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hexify(v) for v in value]
    return value


def as_fields(message: msgspec.Struct) -> Any:
    return hexify(msgspec.to_builtins(message, builtin_types=(bytes,)))


# --- the file itself ---------------------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_file_is_what_the_generator_writes() -> None:
    # Catches an edit of messages.py (or of the generator) without regenerating, which
    # would leave the Rust side checking stale bytes.
    text = (VECTORS_DIR / "vectors.json").read_text(encoding="utf-8")
    assert _load_generator().render() == text


def test_generator_is_deterministic() -> None:
    gen = _load_generator()
    assert gen.render() == gen.render()


def test_file_shape() -> None:
    assert DATA["format"] == "jukisync-vectors"
    assert DATA["version"] == 1
    assert len(BY_NAME) == len(VECTORS)
    assert {v["expect"] for v in VECTORS} == {"ok", "malformed", "bad_signature"}
    assert {v["type"] for v in of("ok")} == {"Update", "BundleBody", "Envelope", "SignedRegistry"}
    for name, key in DATA["keys"].items():
        derived = bytes(nacl.signing.SigningKey(bytes.fromhex(key["seed"])).verify_key)
        assert derived.hex() == key["public_key"], name


# --- ok vectors: bytes <-> fields ----------------------------------------------------------


@pytest.mark.parametrize("vector", of("ok") + of("bad_signature"), ids=ids)
def test_decoded_bytes_match_fields(vector: dict[str, Any]) -> None:
    assert as_fields(decode(vector)) == vector["fields"]


@pytest.mark.parametrize("vector", of("ok") + of("bad_signature"), ids=ids)
def test_reencoding_fields_gives_the_same_bytes(vector: dict[str, Any]) -> None:
    message = from_fields(vector["type"], vector["fields"])
    assert messages.encode(message).hex() == vector["bytes"]


@pytest.mark.parametrize("vector", of("ok") + of("bad_signature"), ids=ids)
def test_sha256(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bytes"])
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]
    if "body_sha256" in vector:
        body = bytes.fromhex(vector["fields"]["body"])
        assert hashlib.sha256(body).hexdigest() == vector["body_sha256"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if "body_fields" in v], ids=ids)
def test_inner_body_matches_body_fields(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["fields"]["body"])
    decoded = msgspec.msgpack.decode(body, type=TYPES[vector["body_type"]])
    assert as_fields(decoded) == vector["body_fields"]
    assert messages.encode(from_fields(vector["body_type"], vector["body_fields"])) == body


# --- ok vectors: signatures with PyNaCl ------------------------------------------------


def signed_message(vector: dict[str, Any]) -> bytes:
    """What the vector's "signature" must be over, derived from the vector itself."""
    if vector["type"] == "BundleBody":
        return bytes.fromhex(vector["bytes"])
    return bytes.fromhex(vector["fields"]["body"])


def signatures(expect: str) -> list[dict[str, Any]]:
    return [v for v in of(expect) if "signature" in v]


@pytest.mark.parametrize("vector", signatures("ok"), ids=ids)
def test_signature_with_pynacl(vector: dict[str, Any]) -> None:
    sig = vector["signature"]
    message = bytes.fromhex(sig["message"])
    assert message == signed_message(vector)
    assert DATA["keys"][sig["signer"]] == {"seed": sig["seed"], "public_key": sig["public_key"]}
    signing = nacl.signing.SigningKey(bytes.fromhex(sig["seed"]))
    assert bytes(signing.verify_key).hex() == sig["public_key"]
    # Ed25519 is deterministic: the seed must reproduce the exact signature.
    assert signing.sign(message).signature.hex() == sig["sig"]
    signing.verify_key.verify(message, bytes.fromhex(sig["sig"]))
    if vector["type"] in ("Envelope", "SignedRegistry"):
        assert vector["fields"]["sig"] == sig["sig"]


@pytest.mark.parametrize("vector", [v for v in of("ok") if v["type"] == "Envelope"], ids=ids)
def test_attestations_with_pynacl(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["fields"]["body"])
    entries = vector["fields"]["attestations"]
    assert len(entries) == len(vector.get("attestations", []))
    for entry, sig in zip(entries, vector.get("attestations", []), strict=True):
        message = hashlib.sha256(body).digest() + entry["received_at"].to_bytes(8, "big")
        assert sig["message"] == message.hex()
        assert len(message) == 40
        assert entry["sig"] == sig["sig"]
        assert entry["centre"] == sig["signer"]
        verify_key = nacl.signing.VerifyKey(bytes.fromhex(sig["public_key"]))
        verify_key.verify(message, bytes.fromhex(sig["sig"]))
        assert (
            nacl.signing.SigningKey(bytes.fromhex(sig["seed"])).sign(message).signature.hex()
            == (sig["sig"])
        )


def test_an_attested_envelope_exists() -> None:
    assert any(v["fields"]["attestations"] for v in of("ok") if v["type"] == "Envelope")
    assert any(not v["fields"]["attestations"] for v in of("ok") if v["type"] == "Envelope")


def test_chain_and_supersedes_link_up() -> None:
    first = BY_NAME["bundle_body_first"]
    second = BY_NAME["bundle_body_second"]
    reissue = BY_NAME["bundle_body_supersedes"]
    assert first["fields"]["prev_hash"] == messages.ZERO_HASH.hex()
    assert first["fields"]["first_seq"] == 1
    assert second["fields"]["prev_hash"] == first["sha256"]
    assert second["fields"]["first_seq"] == first["fields"]["last_seq"] + 1
    assert reissue["fields"]["prev_hash"] == first["sha256"]
    assert reissue["fields"]["supersedes"] == second["sha256"]
    assert first["fields"]["supersedes"] is None
    code_change = [u for u in first["fields"]["updates"] if u["reason"] == "juminhyo_code_change"]
    assert code_change and code_change[0]["previous_juminhyo_code"]
    assert any(u["former_surname"] or u["alias"] for u in first["fields"]["updates"])


def test_registry_vector_names_the_vector_keys() -> None:
    vector = BY_NAME["signed_registry"]
    assert vector["signature"]["signer"] == "root"
    entries = vector["body_fields"]["entries"]
    assert len(entries) == 2
    public = {e["owner"]: e["public_key"] for e in entries}
    assert public["352012"] == DATA["keys"]["origin-352012"]["public_key"]
    assert public["centre-a"] == DATA["keys"]["centre-a"]["public_key"]


# --- negative vectors ---------------------------------------------------------------------

# Why msgspec refuses each one: a vector that failed for some other reason (say, a
# typo in the generator) would not test what its name says.
MALFORMED_REASONS = {
    "bundle_body_unknown_field_zokugara": "unknown field `zokugara`",
    "bundle_body_unknown_field_honseki": "unknown field `honseki`",
    "bundle_body_wrong_type_first_seq": "Expected `int`, got `str` - at `$.first_seq`",
    "bundle_body_wrong_type_prev_hash_str": "Expected `bytes`, got `str` - at `$.prev_hash`",
    "bundle_body_bad_enum_sex": "Invalid enum value 3 - at `$.updates[0].sex`",
    "bundle_body_bad_date": "at `$.updates[0].birth_date`",
    "bundle_body_missing_field_kojin_bango": "missing required field `kojin_bango`",
    "bundle_body_invalid_utf8": "utf-8",
    "bundle_body_truncated": "truncated",
    "bundle_body_trailing_bytes": "trailing characters",
    "bundle_body_as_array": "Expected `object`, got `array`",
    "envelope_truncated": "truncated",
    "envelope_unknown_field": "unknown field `route`",
}


def test_every_malformed_vector_has_a_reason() -> None:
    assert set(MALFORMED_REASONS) == {v["name"] for v in of("malformed")}


@pytest.mark.parametrize("vector", of("malformed"), ids=ids)
def test_malformed_fail_to_decode(vector: dict[str, Any]) -> None:
    # Invalid UTF-8 raises UnicodeDecodeError, not msgspec.DecodeError: both are
    # ValueErrors, which is what a decoder of untrusted bytes must catch.
    with pytest.raises(ValueError) as info:
        decode(vector)
    assert MALFORMED_REASONS[vector["name"]] in str(info.value)


@pytest.mark.parametrize("vector", signatures("bad_signature"), ids=ids)
def test_bad_signatures_fail_with_pynacl(vector: dict[str, Any]) -> None:
    sig = vector["signature"]
    message = signed_message(vector)
    assert bytes.fromhex(sig["message"]) == message
    verify_key = nacl.signing.VerifyKey(bytes.fromhex(sig["public_key"]))
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key.verify(message, bytes.fromhex(sig["sig"]))


# --- the Rust core against the same vectors ----------------------------------------------


@pytest.fixture(scope="module")
def core() -> ModuleType:
    try:
        from jukisync import _core
    except ImportError as exc:  # a failure, not a skip: see the module docstring
        pytest.fail(f"jukisync._core is not built ({exc}); run `make setup`")
    return _core


def flip_bit(data: bytes, index: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


ALL_SIGNATURES = [
    (v["name"], s)
    for v in of("ok")
    for s in ([v["signature"]] if "signature" in v else []) + v.get("attestations", [])
]


@pytest.mark.parametrize(("name", "sig"), ALL_SIGNATURES, ids=[n for n, _ in ALL_SIGNATURES])
def test_core_sign_and_verify(core: ModuleType, name: str, sig: dict[str, Any]) -> None:
    seed, public = bytes.fromhex(sig["seed"]), bytes.fromhex(sig["public_key"])
    message, signature = bytes.fromhex(sig["message"]), bytes.fromhex(sig["sig"])
    assert core.public_key(seed) == public
    assert core.sign(seed, message) == signature
    assert core.verify(public, message, signature) is True
    assert core.verify(public, flip_bit(message), signature) is False
    assert core.verify(public, message, flip_bit(signature)) is False
    assert core.verify(public, message, flip_bit(signature, 63)) is False


def test_core_verify_batch(core: ModuleType) -> None:
    good = [
        (bytes.fromhex(s["public_key"]), bytes.fromhex(s["message"]), bytes.fromhex(s["sig"]))
        for _, s in ALL_SIGNATURES
    ]
    assert core.verify_batch(good) == [True] * len(good)
    # One bad item among good ones: the batch fails, the one-by-one pass finds which.
    pk, msg, sig = good[1]
    mixed = [*good[:1], (pk, msg, flip_bit(sig)), *good[2:]]
    expected = [True] * len(good)
    expected[1] = False
    assert core.verify_batch(mixed) == expected
    assert core.verify_batch([]) == []


@pytest.mark.parametrize("vector", signatures("bad_signature"), ids=ids)
def test_core_rejects_bad_signature_vectors(core: ModuleType, vector: dict[str, Any]) -> None:
    sig = vector["signature"]
    args = (bytes.fromhex(sig["public_key"]), signed_message(vector), bytes.fromhex(sig["sig"]))
    assert core.verify(*args) is False
    assert core.verify_batch([args]) == [False]


@pytest.mark.parametrize("vector", of("ok") + of("bad_signature"), ids=ids)
def test_core_sha256(core: ModuleType, vector: dict[str, Any]) -> None:
    assert core.sha256(bytes.fromhex(vector["bytes"])).hex() == vector["sha256"]
    assert core.sha256(b"") == hashlib.sha256(b"").digest()


def test_core_attestation_message(core: ModuleType) -> None:
    vector = BY_NAME["envelope_attested"]
    (entry,) = vector["fields"]["attestations"]
    (sig,) = vector["attestations"]
    body_hash = bytes.fromhex(vector["body_sha256"])
    assert core.attestation_message(body_hash, entry["received_at"]).hex() == sig["message"]


def test_core_registry_loads_the_vector(core: ModuleType) -> None:
    vector = BY_NAME["signed_registry"]
    root = bytes.fromhex(DATA["keys"]["root"]["public_key"])
    registry = core.KeyRegistry(bytes.fromhex(vector["bytes"]), root)
    assert registry.version == vector["body_fields"]["version"]
    assert sorted(registry.owners()) == sorted(e["owner"] for e in vector["body_fields"]["entries"])
    for entry in vector["body_fields"]["entries"]:
        assert registry.key_for(entry["key_id"]) == (
            entry["owner"],
            bytes.fromhex(entry["public_key"]),
        )
        inside = entry["not_before"] + 1_000_000
        assert registry.valid_at(entry["key_id"], entry["owner"], inside)
        assert not registry.valid_at(entry["key_id"], entry["owner"], entry["not_before"] - 1)
        assert not registry.valid_at(entry["key_id"], "999999", inside)  # not its owner
        if entry["not_after"] is not None:
            assert not registry.valid_at(entry["key_id"], entry["owner"], entry["not_after"] + 1)
    assert registry.key_for("no-such-key") is None


def test_core_registry_rejects_tampering(core: ModuleType) -> None:
    root = bytes.fromhex(DATA["keys"]["root"]["public_key"])
    tampered = BY_NAME["signed_registry_tampered"]
    with pytest.raises(core.JukisyncError):
        core.KeyRegistry(bytes.fromhex(tampered["bytes"]), root)
    genuine = bytes.fromhex(BY_NAME["signed_registry"]["bytes"])
    # Signed by a key that is not the root.
    other_root = bytes.fromhex(DATA["keys"]["centre-a"]["public_key"])
    with pytest.raises(core.JukisyncError):
        core.KeyRegistry(genuine, other_root)
    # Not a registry at all.
    with pytest.raises(core.JukisyncError):
        core.KeyRegistry(genuine[:-5], root)
