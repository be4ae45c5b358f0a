"""Wire messages: the one definition of what crosses between tiers (DESIGN.md §2).

Every message is a msgspec Struct encoded as a MessagePack *map* (field names as
keys, every field always present, in declaration order). The Rust core decodes the
same bytes with serde (`rust/core/src/wire.rs`); the golden vectors under
`tests/vectors/` pin the bytes for both sides.

Times are integers: microseconds since the Unix epoch, UTC. Dates (`birth_date`,
`changed_on`) travel as ISO strings ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ZERO_HASH",
    "Attestation",
    "BundleBody",
    "BundleBodyOfRaw",
    "ChangeFamily",
    "ChangeReason",
    "Envelope",
    "Head",
    "HeadAnnouncement",
    "HeadsMessage",
    "KeyEntry",
    "RegistryBody",
    "RepairRequest",
    "Sex",
    "SignedRegistry",
    "StoredRecord",
    "Update",
    "decode_body",
    "decode_envelope",
    "decode_head",
    "decode_heads_message",
    "decode_update",
    "encode",
    "with_seq",
]

ZERO_HASH = bytes(32)

# Unsigned on the wire (the Rust core decodes them as u64): refuse negatives here too.
Count = Annotated[int, msgspec.Meta(ge=0)]
Micros = Annotated[int, msgspec.Meta(ge=0)]
Hash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class Sex(enum.IntEnum):
    """性別: 1 male, 2 female (the register's own coding)."""

    MALE = 1
    FEMALE = 2

    @property
    def label(self) -> str:
        return {Sex.MALE: "男", Sex.FEMALE: "女"}[self]


class ChangeFamily(enum.StrEnum):
    CREATION = "creation"  # 記載
    REMOVAL = "removal"  # 消除
    CORRECTION = "correction"  # 修正

    @property
    def label(self) -> str:
        return {"creation": "記載", "removal": "消除", "correction": "修正"}[self.value]


class ChangeReason(enum.StrEnum):
    """異動事由: the changes a municipality sends upstream (domain.md)."""

    # 記載 creation
    MOVE_IN = "move_in"
    MOVE_IN_FROM_ABROAD = "move_in_from_abroad"
    BIRTH = "birth"
    ENTRY_BY_AUTHORITY = "entry_by_authority"
    # 消除 removal
    MOVE_OUT = "move_out"
    MOVE_OUT_ABROAD = "move_out_abroad"
    DEATH = "death"
    REMOVAL_BY_AUTHORITY = "removal_by_authority"
    # 修正 correction
    ADDRESS_CHANGE = "address_change"
    CORRECTION_BY_AUTHORITY = "correction_by_authority"
    ERROR_CORRECTION = "error_correction"
    KOJIN_BANGO_CHANGE = "kojin_bango_change"
    JUMINHYO_CODE_CHANGE = "juminhyo_code_change"
    FORMER_SURNAME_ALIAS = "former_surname_alias"

    @property
    def label(self) -> str:
        return _REASON_LABELS[self]

    @property
    def family(self) -> ChangeFamily:
        return _REASON_FAMILY[self]


_REASON_LABELS = {
    ChangeReason.MOVE_IN: "転入",
    ChangeReason.MOVE_IN_FROM_ABROAD: "国外転入",
    ChangeReason.BIRTH: "出生",
    ChangeReason.ENTRY_BY_AUTHORITY: "職権記載",
    ChangeReason.MOVE_OUT: "転出",
    ChangeReason.MOVE_OUT_ABROAD: "国外転出",
    ChangeReason.DEATH: "死亡",
    ChangeReason.REMOVAL_BY_AUTHORITY: "職権消除",
    ChangeReason.ADDRESS_CHANGE: "転居",
    ChangeReason.CORRECTION_BY_AUTHORITY: "職権修正",
    ChangeReason.ERROR_CORRECTION: "誤記修正",
    ChangeReason.KOJIN_BANGO_CHANGE: "個人番号変更",
    ChangeReason.JUMINHYO_CODE_CHANGE: "住民票コード変更",
    ChangeReason.FORMER_SURNAME_ALIAS: "旧氏・通称の記載/削除",
}
_REASON_FAMILY = {
    r: (
        ChangeFamily.CREATION
        if i < 4
        else ChangeFamily.REMOVAL
        if i < 8
        else ChangeFamily.CORRECTION
    )
    for i, r in enumerate(ChangeReason)
}


class Update(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One change to one record. Nothing else leaves a municipality (no 続柄, no 本籍)."""

    seq: Count
    juminhyo_code: str
    previous_juminhyo_code: str | None
    kojin_bango: str
    name: str
    name_kana: str
    former_surname: str | None
    alias: str | None
    birth_date: dt.date
    sex: Sex
    address: str
    municipality: str
    reason: ChangeReason
    changed_on: dt.date
    recorded_at: Micros


class BundleBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The signed unit: contiguous updates of one origin, chained by `prev_hash`."""

    origin: str
    first_seq: Count
    last_seq: Count
    prev_hash: Hash
    created_at: Micros
    updates: list[Update]
    supersedes: Hash | None = None


class BundleBodyOfRaw(msgspec.Struct, frozen=True):
    """A `BundleBody` whose updates are already encoded: the publisher seals the bytes
    it checked (`with_seq`) instead of encoding every update again. Same fields in the
    same order, so it encodes to exactly the bytes of the equal `BundleBody`."""

    origin: str
    first_seq: int
    last_seq: int
    prev_hash: bytes
    created_at: int
    updates: list[msgspec.Raw]
    supersedes: bytes | None = None


class Attestation(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A centre's hop signature over SHA-256(body) ‖ received_at (u64 big-endian)."""

    centre: str
    key_id: str
    received_at: Micros
    sig: bytes


class Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`body` is the exact byte string that was signed and hashed."""

    body: bytes
    key_id: str
    sig: bytes
    attestations: list[Attestation] = []


class KeyEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One key of the registry. `owner` is a 6-digit origin code or a centre id.

    `role` says what the key may sign: "origin" (its municipality's bundles) or
    "centre" (hop attestations, only for the listed `prefectures`). When absent it is
    inferred from the owner; a stated role must agree with it (the core refuses the
    registry otherwise).
    """

    owner: str
    key_id: str
    public_key: bytes
    not_before: int
    not_after: int | None = None
    revoked_at: int | None = None
    role: Literal["origin", "centre"] | None = None
    prefectures: list[str] = msgspec.field(default_factory=list)


class RegistryBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    issued_at: int
    entries: list[KeyEntry]


class SignedRegistry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The registry file: `body` (encoded RegistryBody) signed by the root key."""

    body: bytes
    sig: bytes


class StoredRecord(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A record as the Rust core writes it to the `records` database of a tier store.

    For readers of a store from another process (any LMDB tool); jukisync itself
    reads records through `jukisync.Store`. `status` is ``active``, ``removed``
    (除票, kept) or ``redirect`` (the old code after a 住民票コード change).
    """

    juminhyo_code: str
    status: str
    redirect_to: str | None
    kojin_bango: str
    name: str
    name_kana: str
    former_surname: str | None
    alias: str | None
    birth_date: str
    sex: int
    address: str
    municipality: str
    reason: str
    changed_on: str
    recorded_at: int
    origin: str
    seq: int


class Head(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The signed part of a head announcement: `origin`'s chain ends at `seq`, whose
    bundle body hashes to `hash` and was created at `created_at` (origin's clock).

    Signed by the origin's own key (`relayed_by` None) or, when a centre relays the
    head it holds, by that centre's key (`relayed_by` = the centre id, the key's
    owner). Never trusted for content: a tier only learns from it that signed
    envelopes up to `seq` exist, and asks for them.
    """

    origin: str
    seq: Count
    hash: Hash
    created_at: Micros
    announced_at: Micros
    relayed_by: str | None = None


class HeadAnnouncement(msgspec.Struct, forbid_unknown_fields=True, frozen=True, tag="head"):
    """On `jukisync.heads`, routing key `head.<pref>.<origin>`: `body` is an encoded
    `Head`, `sig` the Ed25519 signature over it by `key_id`."""

    body: bytes
    key_id: str
    sig: bytes


class RepairRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, tag="repair"):
    """On `jukisync.heads`, routing key `repair.<pref>.<origin>`: `requester` is behind
    on `origin` from `from_seq`; a centre serving that prefecture sends at most
    `max_bundles` bundles from its change log (signed, attested envelopes) either to
    the centres (`to="centres"`: the updates exchange, as the origin would) or to
    national (`to="national"`: the forward exchange, as a forward)."""

    origin: str
    from_seq: Count
    max_bundles: Annotated[int, msgspec.Meta(ge=1)]
    requester: str
    to: Literal["centres", "national"]


HeadsMessage = HeadAnnouncement | RepairRequest

_encoder = msgspec.msgpack.Encoder()
_heads_decoder = msgspec.msgpack.Decoder(HeadsMessage)
_head_decoder = msgspec.msgpack.Decoder(Head)
_body_decoder = msgspec.msgpack.Decoder(BundleBody)
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_update_decoder = msgspec.json.Decoder(Update)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


# An encoded Update is a map whose first entry is `seq` (fields in declaration order,
# all present): what follows the seq's value does not depend on it. So an update is
# encoded once, when the publisher checks it, and numbered by replacing that value.
_UPDATE_SEQ_KEY = bytes([0x80 | len(Update.__struct_fields__)]) + b"\xa3seq"
_UINT_WIDTH = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}  # tag -> bytes with the tag


def with_seq(update: bytes, seq: int) -> bytes:
    """`update` (an encoded `Update`) with `seq` as its sequence number: the bytes
    `encode` gives for the same update with that seq."""
    start = len(_UPDATE_SEQ_KEY)
    width = None
    if update.startswith(_UPDATE_SEQ_KEY) and len(update) > start:
        tag = update[start]
        width = 1 if tag < 0x80 else _UINT_WIDTH.get(tag)
    if width is None:
        raise ValueError("not an encoded Update (a map starting with its seq)")
    return _UPDATE_SEQ_KEY + _encoder.encode(seq) + update[start + width :]


def decode_body(data: bytes) -> BundleBody:
    return _body_decoder.decode(data)


def decode_envelope(data: bytes) -> Envelope:
    return _envelope_decoder.decode(data)


def decode_heads_message(data: bytes) -> HeadAnnouncement | RepairRequest:
    message: HeadAnnouncement | RepairRequest = _heads_decoder.decode(data)
    return message


def decode_head(data: bytes) -> Head:
    return _head_decoder.decode(data)


def decode_update(json_line: bytes | str) -> Update:
    """One update from a JSON line (the `jukisync gen` / `publish` file format)."""
    return _update_decoder.decode(json_line)
