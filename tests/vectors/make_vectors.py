"""Generate tests/vectors/vectors.json: golden wire vectors shared by Rust and Python.

    .venv/bin/python tests/vectors/make_vectors.py          # (re)write vectors.json
    .venv/bin/python tests/vectors/make_vectors.py --check  # exit 1 if it is stale

(With PYTHONPATH=python if the package is not installed; `_core` is not needed.)

Built only from the wire definition (`jukisync.messages`, msgspec), PyNaCl (an Ed25519
independent of `jukisync._core`) and hashlib, from fixed seeds and fixed timestamps, so
the output is the same byte for byte on every run. Rust (`cargo test`) and
tests/test_vectors.py both check against the committed file: if either side drifts
from the other, one of them fails.

JSON schema of vectors.json (all hex is lowercase, no prefix)
--------------------------------------------------------------
{
  "format": "jukisync-vectors",
  "version": 1,                         # bumped on any incompatible schema change
  "keys": {                             # every key used below, by name
    "<name>": {"seed": HEX32, "public_key": HEX32}
  },
  "vectors": [VECTOR, ...]
}

VECTOR, common members:
  "name":   unique string, e.g. "bundle_body_first"
  "type":   the messages.py Struct the bytes decode as: "Update" | "BundleBody" |
            "Envelope" | "SignedRegistry"
  "expect": "ok"            decodes; fields, hashes and signatures below all hold
            "malformed"     must fail to decode as "type" (nothing else is given)
            "bad_signature" decodes, but "signature" does not verify
  "bytes":  HEX, the exact MessagePack bytes
  "why":    one line saying what the vector is for

"ok" and "bad_signature" vectors add:
  "fields": the decoded message as a JSON object, every field present, in declaration
            order: byte strings as HEX, dates as "YYYY-MM-DD", enums by value (sex as
            1/2, reason as e.g. "move_in"), absent optionals as null, times as integer
            microseconds since the Unix epoch (UTC)
  "sha256": HEX, SHA-256 of "bytes" (for a BundleBody: its chain hash)

Envelope and SignedRegistry vectors add:
  "body_type":   "BundleBody" | "RegistryBody", the Struct that fields.body decodes as
  "body_fields": that inner message's fields, as "fields" above
  "body_sha256": HEX, SHA-256 of the inner body bytes

BundleBody, Envelope and SignedRegistry vectors add "signature", a SIGNATURE over the
body (for BundleBody: over "bytes"; it is the sig the envelope would carry). Envelope
vectors add "attestations", one SIGNATURE per entry of fields.attestations, in order.

SIGNATURE:
  {"signer": key name in "keys", "seed": HEX32, "public_key": HEX32,
   "message": HEX, the exact bytes signed (for an attestation:
              SHA-256(body) || received_at as u64 big-endian, 40 bytes),
   "sig": HEX64, Ed25519 (RFC 8032; deterministic, so signing "message" with "seed"
          reproduces it)}
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import nacl.signing

from jukisync.wire.codes import validate_update
from jukisync.wire.messages import (
    ZERO_HASH,
    Attestation,
    BundleBody,
    ChangeReason,
    Envelope,
    KeyEntry,
    RegistryBody,
    Sex,
    SignedRegistry,
    Update,
    encode,
)

OUT = Path(__file__).with_name("vectors.json")
JST = dt.timezone(dt.timedelta(hours=9))

Json = dict[str, Any]


def micros(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> int:
    """Microseconds since the epoch of a Japan-time wall clock reading."""
    moment = dt.datetime(year, month, day, hour, minute, sec, tzinfo=JST)
    return int(moment.timestamp()) * 1_000_000


def seed_of(name: str) -> bytes:
    # Fixed, documented seeds: anyone can re-derive them without this script.
    return hashlib.sha256(f"jukisync test vector key: {name}".encode()).digest()


class Key:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seed = seed_of(name)
        self.signing = nacl.signing.SigningKey(self.seed)
        self.public = bytes(self.signing.verify_key)

    def signature(self, message: bytes) -> Json:
        sig = self.signing.sign(message).signature
        return {
            "signer": self.name,
            "seed": self.seed.hex(),
            "public_key": self.public.hex(),
            "message": message.hex(),
            "sig": sig.hex(),
        }

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message).signature


ORIGIN = Key("origin-352012")  # 下関市
CENTRE = Key("centre-a")  # an aggregation centre
ROOT = Key("root")  # signs the key registry
KEYS = (ORIGIN, CENTRE, ROOT)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def to_json(value: Any) -> Any:
    """msgspec builtins with byte strings as hex (not msgspec's default base64)."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value, builtin_types=(bytes,))
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


# --- the messages -----------------------------------------------------------------------


def updates_first() -> list[Update]:
    move_in = Update(
        seq=1,
        juminhyo_code="12345678901",
        previous_juminhyo_code=None,
        kojin_bango="123456789018",
        name="山口 花子",
        name_kana="ヤマグチ ハナコ",
        former_surname=None,
        alias=None,
        birth_date=dt.date(1990, 4, 1),
        sex=Sex.FEMALE,
        address="山口県下関市南部町1番1号",
        municipality="352012",
        reason=ChangeReason.MOVE_IN,
        changed_on=dt.date(2026, 3, 30),
        recorded_at=micros(2026, 3, 30, 10, 15, 0),
    )
    # Optional text set, and a kanji outside the BMP (𠮷, 4 bytes of UTF-8).
    former_surname = Update(
        seq=2,
        juminhyo_code="23456789012",
        previous_juminhyo_code=None,
        kojin_bango="983205673214",
        name="髙橋 𠮷子",
        name_kana="タカハシ ヨシコ",
        former_surname="佐藤",
        alias=None,
        birth_date=dt.date(1985, 12, 24),
        sex=Sex.FEMALE,
        address="山口県下関市竹崎町4丁目2番36号",
        municipality="352012",
        reason=ChangeReason.FORMER_SURNAME_ALIAS,
        changed_on=dt.date(2026, 3, 31),
        recorded_at=micros(2026, 3, 31, 14, 0, 5),
    )
    code_change = Update(
        seq=3,
        juminhyo_code="34567890123",
        previous_juminhyo_code="45678901234",
        kojin_bango="111111111118",
        name="SMITH JOHN",
        name_kana="スミス・ジョン",
        former_surname=None,
        alias="須美寿 ジョン",
        birth_date=dt.date(1978, 7, 7),
        sex=Sex.MALE,
        address="山口県下関市彦島迫町1丁目10番5号",
        municipality="352012",
        reason=ChangeReason.JUMINHYO_CODE_CHANGE,
        changed_on=dt.date(2026, 4, 1),
        recorded_at=micros(2026, 4, 1, 9, 30, 0),
    )
    return [move_in, former_surname, code_change]


def bundle_first() -> BundleBody:
    ups = updates_first()
    return BundleBody(
        origin="352012",
        first_seq=1,
        last_seq=3,
        prev_hash=ZERO_HASH,
        created_at=micros(2026, 4, 1, 9, 30, 1),
        updates=ups,
    )


def address_change(address: str, reason: ChangeReason, recorded_at: int) -> Update:
    return msgspec.structs.replace(
        updates_first()[0],
        seq=4,
        address=address,
        reason=reason,
        changed_on=dt.date(2026, 4, 2),
        recorded_at=recorded_at,
    )


def bundle_second(first: bytes) -> BundleBody:
    """seq 4, chained to the first; in the story, quarantined and then dropped."""
    return BundleBody(
        origin="352012",
        first_seq=4,
        last_seq=4,
        prev_hash=sha256(first),
        created_at=micros(2026, 4, 2, 11, 0, 1),
        updates=[
            address_change(
                "山口県下関市南部町2番1号",
                ChangeReason.ADDRESS_CHANGE,
                micros(2026, 4, 2, 11, 0, 0),
            )
        ],
    )


def bundle_reissue(first: bytes, dropped: bytes) -> BundleBody:
    """seq 4 again, re-issued after the operator dropped `dropped` (DESIGN.md §3)."""
    return BundleBody(
        origin="352012",
        first_seq=4,
        last_seq=4,
        prev_hash=sha256(first),
        created_at=micros(2026, 4, 2, 15, 0, 1),
        updates=[
            address_change(
                "山口県下関市唐戸町6番1号",
                ChangeReason.ADDRESS_CHANGE,
                micros(2026, 4, 2, 15, 0, 0),
            )
        ],
        supersedes=sha256(dropped),
    )


def attestation_message(body: bytes, received_at: int) -> bytes:
    return sha256(body) + received_at.to_bytes(8, "big")


def registry_body() -> RegistryBody:
    return RegistryBody(
        version=1,
        issued_at=micros(2026, 1, 5, 9, 0, 0),
        entries=[
            KeyEntry(
                owner="352012",
                key_id="352012-2026",
                public_key=ORIGIN.public,
                not_before=micros(2026, 1, 1, 0, 0, 0),
                # Equipment is refreshed every 6 years, and the key with it.
                not_after=micros(2032, 1, 1, 0, 0, 0),
                role="origin",
            ),
            KeyEntry(
                owner="centre-a",
                key_id="centre-a-2026",
                public_key=CENTRE.public,
                not_before=micros(2026, 1, 1, 0, 0, 0),
                # A centre key attests only for the prefectures its centre serves.
                role="centre",
                prefectures=["35", "34"],
            ),
        ],
    )


# --- vector builders ----------------------------------------------------------------------


def ok(name: str, why: str, message: msgspec.Struct, **extra: Any) -> Json:
    data = encode(message)
    return {
        "name": name,
        "type": type(message).__name__,
        "expect": "ok",
        "why": why,
        "bytes": data.hex(),
        "fields": to_json(message),
        "sha256": sha256(data).hex(),
        **extra,
    }


def body_vector(name: str, why: str, body: BundleBody) -> Json:
    data = encode(body)
    return ok(name, why, body, signature=ORIGIN.signature(data))


def envelope_vector(name: str, why: str, body: BundleBody, received: list[int]) -> Json:
    data = encode(body)
    attestations = [
        Attestation(
            centre=CENTRE.name,
            key_id="centre-a-2026",
            received_at=at,
            sig=CENTRE.sign(attestation_message(data, at)),
        )
        for at in received
    ]
    env = Envelope(
        body=data, key_id="352012-2026", sig=ORIGIN.sign(data), attestations=attestations
    )
    return ok(
        name,
        why,
        env,
        body_type="BundleBody",
        body_fields=to_json(body),
        body_sha256=sha256(data).hex(),
        signature=ORIGIN.signature(data),
        attestations=[CENTRE.signature(attestation_message(data, at)) for at in received],
    )


def registry_vector(name: str, why: str, body: RegistryBody) -> Json:
    data = encode(body)
    signed = SignedRegistry(body=data, sig=ROOT.sign(data))
    return ok(
        name,
        why,
        signed,
        body_type="RegistryBody",
        body_fields=to_json(body),
        body_sha256=sha256(data).hex(),
        signature=ROOT.signature(data),
    )


def malformed(name: str, type_name: str, why: str, data: bytes) -> Json:
    return {"name": name, "type": type_name, "expect": "malformed", "why": why, "bytes": data.hex()}


_raw = msgspec.msgpack.Encoder()


def raw_map(items: list[tuple[str, Any]]) -> bytes:
    """A MessagePack map written by hand, for shapes msgspec Structs cannot produce."""
    if len(items) > 15:
        raise ValueError("fixmap only")
    out = bytearray([0x80 | len(items)])
    for key, value in items:
        out += _raw.encode(key) + _raw.encode(value)
    return bytes(out)


def malformed_vectors(first: BundleBody) -> list[Json]:
    good = encode(first)
    as_dict: dict[str, Any] = msgspec.msgpack.decode(good)
    upd0: dict[str, Any] = as_dict["updates"][0]

    def with_update0(update: dict[str, Any]) -> bytes:
        return _raw.encode({**as_dict, "updates": [update, *as_dict["updates"][1:]]})

    env = Envelope(body=good, key_id="352012-2026", sig=ORIGIN.sign(good))
    env_bytes = encode(env)
    name_utf8 = upd0["name"].encode()
    invalid_utf8 = good.replace(name_utf8, b"\xff" * len(name_utf8), 1)
    assert invalid_utf8 != good

    return [
        malformed(
            "bundle_body_unknown_field_zokugara",
            "BundleBody",
            "an update carrying 続柄 (zokugara), which never leaves a municipality",
            with_update0({**upd0, "zokugara": "長女"}),
        ),
        malformed(
            "bundle_body_unknown_field_honseki",
            "BundleBody",
            "a body carrying 本籍 (honseki) at its top level",
            _raw.encode({**as_dict, "honseki": "山口県萩市大字江向510番地"}),
        ),
        malformed(
            "bundle_body_wrong_type_first_seq",
            "BundleBody",
            "first_seq as a string instead of an integer",
            _raw.encode({**as_dict, "first_seq": "1"}),
        ),
        malformed(
            "bundle_body_wrong_type_prev_hash_str",
            "BundleBody",
            "prev_hash as a MessagePack str instead of bin (serde_bytes would accept it)",
            _raw.encode({**as_dict, "prev_hash": "0" * 32}),
        ),
        malformed(
            "bundle_body_bad_enum_sex",
            "BundleBody",
            "sex 3: not 1 (male) or 2 (female)",
            with_update0({**upd0, "sex": 3}),
        ),
        malformed(
            "bundle_body_bad_date",
            "BundleBody",
            "birth_date 1990-02-30 does not exist",
            with_update0({**upd0, "birth_date": "1990-02-30"}),
        ),
        malformed(
            "bundle_body_missing_field_kojin_bango",
            "BundleBody",
            "an update without kojin_bango",
            with_update0({k: v for k, v in upd0.items() if k != "kojin_bango"}),
        ),
        malformed(
            "bundle_body_invalid_utf8",
            "BundleBody",
            "a name whose bytes are not UTF-8",
            invalid_utf8,
        ),
        malformed(
            "bundle_body_truncated",
            "BundleBody",
            "a valid body with its last 7 bytes cut off",
            good[:-7],
        ),
        malformed(
            "bundle_body_trailing_bytes",
            "BundleBody",
            "a valid body followed by one more MessagePack value (nil)",
            good + b"\xc0",
        ),
        malformed(
            "bundle_body_as_array",
            "BundleBody",
            "the body's fields as an array, not a map (rmp-serde accepts both by default)",
            _raw.encode(
                [[list(u.values()) for u in v] if k == "updates" else v for k, v in as_dict.items()]
            ),
        ),
        malformed(
            "envelope_truncated",
            "Envelope",
            "a valid envelope cut in the middle of its signature",
            env_bytes[:-20],
        ),
        malformed(
            "envelope_unknown_field",
            "Envelope",
            "an envelope with an extra top-level key",
            raw_map([*msgspec.msgpack.decode(env_bytes).items(), ("route", "direct")]),
        ),
    ]


def bad_signature_vectors(first: BundleBody) -> list[Json]:
    good = encode(first)
    sig = bytearray(ORIGIN.sign(good))
    sig[0] ^= 0x01
    env = Envelope(body=good, key_id="352012-2026", sig=bytes(sig))
    env_vec = ok(
        "envelope_bad_signature",
        "the origin's signature with one bit flipped",
        env,
        body_type="BundleBody",
        body_fields=to_json(first),
        body_sha256=sha256(good).hex(),
        signature={**ORIGIN.signature(good), "sig": bytes(sig).hex()},
    )

    # The attack the registry signature exists for: a key swapped in after signing.
    genuine = registry_body()
    genuine_bytes = encode(genuine)
    forged_key = Key("attacker")
    forged = msgspec.structs.replace(
        genuine,
        entries=[
            msgspec.structs.replace(genuine.entries[0], public_key=forged_key.public),
            genuine.entries[1],
        ],
    )
    forged_bytes = encode(forged)
    root_sig = ROOT.sign(genuine_bytes)
    reg_vec = ok(
        "signed_registry_tampered",
        "an origin's public key replaced in the body, the root signature left as it was",
        SignedRegistry(body=forged_bytes, sig=root_sig),
        body_type="RegistryBody",
        body_fields=to_json(forged),
        body_sha256=sha256(forged_bytes).hex(),
        signature={**ROOT.signature(forged_bytes), "sig": root_sig.hex()},
    )
    for vec in (env_vec, reg_vec):
        vec["expect"] = "bad_signature"
    return [env_vec, reg_vec]


def build() -> Json:
    first = bundle_first()
    first_bytes = encode(first)
    second = bundle_second(first_bytes)
    reissue = bundle_reissue(first_bytes, encode(second))
    for body in (first, second, reissue):
        for update in body.updates:
            validate_update(update)  # the ok vectors are valid content, not just valid bytes

    vectors = [
        ok("update_move_in", "one update on its own (転入)", first.updates[0]),
        body_vector(
            "bundle_body_first",
            "seq 1-3 of 352012, first of its chain: a move-in, an optional field "
            "(former_surname) with a non-BMP kanji, and a 住民票コード change",
            first,
        ),
        body_vector(
            "bundle_body_second",
            "seq 4, chained to bundle_body_first (prev_hash = its sha256)",
            second,
        ),
        body_vector(
            "bundle_body_supersedes",
            "seq 4 re-issued: same prev_hash, supersedes = sha256 of bundle_body_second",
            reissue,
        ),
        envelope_vector(
            "envelope_first",
            "bundle_body_first as the origin sends it: signed, no attestations",
            first,
            [],
        ),
        envelope_vector(
            "envelope_attested",
            "bundle_body_first as forwarded by centre-a with its hop attestation",
            first,
            [first.created_at + 1_500_000],
        ),
        registry_vector(
            "signed_registry",
            "a registry of two keys (origin 352012, centre-a) signed by the root key",
            registry_body(),
        ),
        *malformed_vectors(first),
        *bad_signature_vectors(first),
    ]
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return {
        "format": "jukisync-vectors",
        "version": 1,
        "keys": {k.name: {"seed": k.seed.hex(), "public_key": k.public.hex()} for k in KEYS},
        "vectors": vectors,
    }


def render() -> str:
    return json.dumps(build(), ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if vectors.json is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(json.loads(text)['vectors'])} vectors to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
