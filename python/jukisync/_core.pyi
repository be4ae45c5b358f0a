# Type stub for the Rust extension `jukisync._core` (rust/py). Checked by mypy.stubtest.
import os
from collections.abc import Iterable
from typing import Literal, TypeAlias, final

__all__ = [
    "ANSWER_FIELDS",
    "CONFIRM_REASONS",
    "ApplyResult",
    "AuditEntry",
    "AuditVerification",
    "Candidate",
    "CodeDiff",
    "ConfirmResult",
    "JukisyncError",
    "KeyRegistry",
    "LookupResult",
    "MalformedError",
    "OriginDiff",
    "PrunedError",
    "PurgeResult",
    "QuarantineEntry",
    "QuarantineError",
    "Reconciliation",
    "Record",
    "RegistryError",
    "SearchResult",
    "SignatureError",
    "Store",
    "StoreError",
    "__version__",
    "attestation_message",
    "bundle_span",
    "generate_signing_key",
    "key_role",
    "normalize_reading",
    "public_key",
    "sha256",
    "sign",
    "validate_update",
    "verify",
    "verify_batch",
]

__version__: str

class JukisyncError(Exception): ...
class MalformedError(JukisyncError): ...
class SignatureError(JukisyncError): ...
class RegistryError(JukisyncError): ...
class StoreError(JukisyncError): ...
class QuarantineError(JukisyncError): ...
class PrunedError(JukisyncError): ...

# --- crypto -------------------------------------------------------------------------
def generate_signing_key() -> bytes:
    """A new Ed25519 secret key (32-byte seed) from the OS random source."""

def public_key(secret: bytes) -> bytes: ...
def sign(secret: bytes, message: bytes) -> bytes: ...
def verify(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
def verify_batch(items: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """(public_key, message, signature) triples; batch verification, one-by-one on failure.

    One answer per item (an unusable public key is False for its item only); the same
    rule (ZIP-215) as `verify`, so an item's answer never depends on its batch.
    """

def key_role(owner: str) -> Literal["origin", "centre"]:
    """The role an owner implies; ValueError if it is neither an origin nor a centre id."""

def validate_update(
    update: bytes, origin: str, now: int | None = None, max_skew_us: int = 600_000_000
) -> str | None:
    """The first problem every tier would halt `origin` for in this encoded Update."""

def bundle_span(envelope: bytes) -> tuple[str, int, int] | None:
    """(origin, first_seq, last_seq) an envelope's body claims, read without decoding
    its updates nor verifying anything (routing, batching), or None if not one."""

def sha256(data: bytes) -> bytes: ...
def attestation_message(body_hash: bytes, received_at: int) -> bytes:
    """The bytes a centre signs: SHA-256(body) ‖ received_at as u64 big-endian."""

# --- text ---------------------------------------------------------------------------
def normalize_reading(text: str) -> str:
    """Search key for a name or reading: NFKC, hiragana→katakana, spaces removed."""

# --- key registry -------------------------------------------------------------------
@final
class KeyRegistry:
    """A key registry verified against the root public key (DESIGN.md §7)."""

    def __new__(cls, signed_registry: bytes, root_public_key: bytes) -> KeyRegistry: ...
    @property
    def version(self) -> int: ...
    def owners(self) -> list[str]: ...
    def key_for(self, key_id: str) -> tuple[str, bytes] | None:
        """(owner, public key) of a key id, or None."""
    def role_of(self, key_id: str) -> tuple[str, list[str]] | None:
        """(role, prefectures) of a key id, or None."""

    def valid_at(self, key_id: str, owner: str, at: int) -> bool: ...

# --- store --------------------------------------------------------------------------
_Status: TypeAlias = Literal["applied", "duplicate", "gap", "rejected"]

@final
class ApplyResult:
    @property
    def status(self) -> _Status: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def first_seq(self) -> int | None: ...
    @property
    def last_seq(self) -> int | None: ...
    @property
    def hash(self) -> bytes | None:
        """SHA-256 of the body (None when the envelope could not be decoded)."""

    @property
    def updates(self) -> int:
        """Updates in the bundle (for applied/duplicate)."""

    @property
    def reason(self) -> str | None:
        """Why it was rejected, or why it waits (gap: missing range or origin halted)."""

    @property
    def kind(self) -> Literal["security", "halt"] | None:
        """For rejected: `security` (not from the origin) or `halt` (from it, but wrong)."""

    @property
    def resend_from(self) -> int | None:
        """For gap: the first sequence number to ask the origin for (None if halted)."""

    @property
    def quarantine_id(self) -> int | None: ...
    @property
    def released(self) -> int:
        """Bundles of the same origin applied from pending after this one."""

    @property
    def pending_rejected(self) -> ApplyResult | None:
        """A bundle taken from pending after this one and rejected there (quarantined;
        a halt stops its origin), or None."""

@final
class Record:
    """One identity record. Fields are converted to Python objects on access."""

    @property
    def juminhyo_code(self) -> str: ...
    @property
    def status(self) -> Literal["active", "removed", "redirect"]: ...
    @property
    def redirect_to(self) -> str | None: ...
    @property
    def kojin_bango(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def name_kana(self) -> str: ...
    @property
    def former_surname(self) -> str | None: ...
    @property
    def alias(self) -> str | None: ...
    @property
    def birth_date(self) -> str: ...
    @property
    def sex(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def municipality(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def changed_on(self) -> str: ...
    @property
    def recorded_at(self) -> int: ...
    @property
    def origin(self) -> str: ...
    @property
    def seq(self) -> int: ...
    def to_dict(self) -> dict[str, str | int | None]: ...

@final
class QuarantineEntry:
    @property
    def id(self) -> int: ...
    @property
    def received_at(self) -> int: ...
    @property
    def kind(self) -> Literal["security", "halt"]: ...
    @property
    def reason(self) -> str: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def first_seq(self) -> int | None: ...
    @property
    def last_seq(self) -> int | None: ...
    @property
    def hash(self) -> bytes | None: ...
    @property
    def state(self) -> Literal["open", "released", "dropped"]: ...
    @property
    def size(self) -> int: ...
    @property
    def envelope(self) -> bytes:
        """The bytes as received (the first 64 KiB only, for oversized messages)."""

    @property
    def actions(self) -> list[tuple[str, str, int, str, str]]:
        """(action, operator, at µs, reason, role of the node) of each operator
        decision, oldest first."""

@final
class CodeDiff:
    """One record that differs between two stores (`Store.reconcile`)."""

    @property
    def code(self) -> str: ...
    @property
    def newer(self) -> Literal["a", "b", "neither"]:
        """The side holding the higher version; "neither": same version, other bytes."""

    @property
    def a(self) -> Record | None: ...
    @property
    def b(self) -> Record | None: ...

@final
class OriginDiff:
    """An origin whose chain head or records differ between two stores."""

    @property
    def origin(self) -> str: ...
    @property
    def a_head(self) -> tuple[int, bytes] | None: ...
    @property
    def b_head(self) -> tuple[int, bytes] | None: ...
    @property
    def codes(self) -> list[CodeDiff]: ...

@final
class Reconciliation:
    @property
    def equal(self) -> bool: ...
    @property
    def origins(self) -> list[OriginDiff]: ...
    @property
    def nodes_compared(self) -> int:
        """Merkle nodes compared: the cost grows with the differences."""

    @property
    def records_read(self) -> int: ...

@final
class Store:
    """A tier store: one LMDB environment owned by this object (DESIGN.md §4)."""

    def __new__(
        cls,
        path: str,
        *,
        role: Literal["aggregator", "national"] | None = None,
        registry: KeyRegistry,
        centre_id: str | None = None,
        centre_key: bytes | None = None,
        centre_key_id: str | None = None,
        map_size: int = 1 << 34,
        max_bundle_bytes: int = 8 << 20,
        pending_limit: int = 10_000,
        require_attestation: bool | None = None,
        max_skew_us: int = 600_000_000,
        prefectures: list[str] | None = None,
    ) -> Store:
        """`centre_*` are required for an aggregator (it attests what it forwards).
        `require_attestation` defaults to True for national, False for aggregator.
        `max_skew_us`: how far a sender's clock may run ahead of this tier's.
        `prefectures` (aggregator): the prefectures it serves; others are refused.
        The store records its role when first opened and refuses another one later;
        `role=None` opens an existing store as the role it recorded (an aggregator
        store without `centre_*` then reads but refuses to apply or release)."""

    @property
    def path(self) -> str: ...
    @property
    def role(self) -> str: ...
    def set_registry(self, registry: KeyRegistry) -> None: ...
    def set_centre_key(self, key_id: str, key: bytes, not_before: int = 0) -> None:
        """Attest with another key of this centre (a rotated own key) what is received
        from `not_before` (µs) on; refused (StoreError) without a centre identity."""

    def centre_key_id(self, at: int | None = None) -> str | None:
        """The key id this centre attests with at `at` (µs, default now); None: the
        store does not attest."""
    def copy_compacted(self, dest_dir: str | os.PathLike[str]) -> int:
        """A compacted, consistent hot copy of the environment at `dest_dir/data.mdb`
        (refused if that exists); its size in bytes."""

    def load_records_from(self, source: Store, append: bool = True) -> int:
        """Load a snapshot: `source`'s records, indexes and Merkle sums, in key order,
        into this empty store with LMDB's append mode (`append=False`: ordinary puts);
        the records loaded. Copied as a restore copies the file: `check` compares them."""

    def load_sorted(self, records: list[tuple[str, bytes]], append: bool = True) -> int:
        """Bulk load `(code, stored record bytes)` pairs in strictly ascending code
        order into this empty store with append mode, then build its indexes and Merkle
        sums from them; the records loaded."""

    def copy_audit_from(self, source: Store) -> int:
        """Carry `source`'s query audit trail into this store (whose trail is empty),
        in append mode; the entries copied. Verify with `audit_verify` after."""

    def record_role_after_rebuild(self, role: Literal["aggregator", "national"]) -> None:
        """Record the role of a store `bootstrap` rebuilt (opened as national, to apply
        without attesting) for the node that will open it."""

    def copy_forward_backlog_from(self, source: Store) -> int:
        """Queue `source`'s forward backlog here (bundles applied, not yet forwarded):
        entries of this store's change log; the number queued."""
    def apply(
        self,
        envelopes: list[bytes],
        received_at: int | None = None,
        *,
        forwarded: list[int] = ...,
    ) -> list[ApplyResult]:
        """Verify and apply a batch in one write transaction, GIL released, reading the
        envelopes without copying them. `forwarded`: outbox ids national confirmed,
        forgotten in the same commit (aggregator; no commit of their own)."""

    def get(self, code: str) -> Record | None: ...
    def get_many(self, codes: Iterable[str]) -> list[Record | None]:
        """The records of `codes` in their order (None where none), read in key order
        under one read transaction with the GIL released."""

    def get_many_field(self, codes: Iterable[str], field: str) -> list[str | int | None]:
        """One field of each record, in the order of `codes` (None where none), read in
        place without a `Record` per code; repeated values are one shared str."""

    def by_number(self, kojin_bango: str) -> Record | None: ...
    def chain_head(self, origin: str) -> tuple[int, bytes] | None:
        """(last applied seq, hash of the last applied body) of an origin."""

    def chain_heads(self) -> dict[str, tuple[int, bytes]]: ...
    def changes(self, origin: str, from_seq: int, limit: int = 1000) -> list[bytes]:
        """Envelopes (as stored) of the bundles of `origin` holding seqs >= from_seq.

        PrunedError (naming the archive) when from_seq is before the retained log."""

    def retention_plan(
        self, keep_bundles: int, created_before: int
    ) -> list[tuple[str, int, int, int]]:
        """(origin, from_seq, upto, bundles) a policy lets go: all but the newest
        `keep_bundles` entries created at or before `created_before` (µs), never the head
        entry nor one the forward backlog names."""

    def prune_changelog(self, cuts: list[tuple[str, int]], archive: str) -> list[tuple[str, int]]:
        """Delete each origin's change-log entries with last seq <= upto (one write
        transaction), recording `archive` as where they went; (origin, deleted)."""

    def retention_floors(self) -> list[tuple[str, int, bytes, str]]:
        """(origin, first retained seq, hash of the last pruned bundle, its archive)."""

    def archive_for(self, origin: str, seq: int) -> str | None:
        """The archive holding a pruned bundle of `origin` with `seq`, else None."""

    def changelog_entries(self) -> int: ...
    def digest(self, municipality_prefix: str = "") -> str:
        """Hex digest of the active records whose municipality starts with the prefix."""

    def stats(self) -> dict[str, int]: ...
    def forward_batch(self, limit: int = 1000, after: int = 0) -> list[tuple[int, str, bytes]]:
        """(outbox id, origin, attested envelope) of the forwards waiting with ids above
        `after`, oldest first (aggregator). The origin comes from the outbox's key."""

    def forward_done(self, ids: list[int]) -> None: ...
    def quarantine(self, include_closed: bool = False) -> list[QuarantineEntry]: ...
    def quarantine_entry(self, id: int) -> QuarantineEntry: ...
    def release(
        self,
        id: int,
        *,
        operator: str | None = None,
        reason: str | None = None,
        at: int | None = None,
    ) -> ApplyResult:
        """Accept a halting bundle as it is; the origin resumes (pending drained). At an
        aggregator it is attested and queued for forwarding. `operator` and `reason`
        (together) are recorded with the entry, at `at` (µs, default now)."""

    def drop(
        self,
        id: int,
        *,
        operator: str | None = None,
        reason: str | None = None,
        at: int | None = None,
    ) -> None:
        """Discard a quarantined bundle; a halted origin then waits for a bundle whose
        `supersedes` names the dropped bundle's hash."""

    def check(self) -> list[tuple[str, str]]:
        """Every inconsistency as (kind, detail): indexes and Merkle sums against the
        records, heads against the change log, the log's chain and signatures, pending,
        forward outbox, halts, the audit chain. Empty when consistent."""

    def reconcile(self, other: Store) -> Reconciliation:
        """Compare with another store (this one is `a`): heads, then Merkle trees."""

    def rebuild_codes(self, codes: list[str]) -> int:
        """Recompute these records from the local change log; how many changed."""

    def rebuild_indexes(self) -> None:
        """Rebuild every index and the Merkle sums from the records."""

    def merkle_roots(self) -> dict[str, tuple[int, bytes]]:
        """Each origin's Merkle root: (records, 256-bit sum)."""

    def halted(self) -> dict[str, str]:
        """Halted origins and why."""

    def pending(self, origin: str) -> list[tuple[int, int]]:
        """(first_seq, last_seq) of the bundles of an origin waiting in pending."""

    # --- purpose-bound queries and the audit trail (DESIGN.md §6) -------------------
    # Each query is answered and logged in one write transaction (GIL released). The
    # caller has already checked the policy; `requester` and `task` are logged as given.
    # `time` (µs since the epoch) defaults to now.
    def lookup(
        self, code: str, *, requester: str, task: str, time: int | None = None, detail: str = ""
    ) -> LookupResult:
        """The record under 住民票コード `code`, following code changes."""

    def lookup_number(
        self,
        kojin_bango: str,
        *,
        requester: str,
        task: str,
        time: int | None = None,
        detail: str = "",
    ) -> LookupResult: ...
    def lookup_answer(
        self,
        key: str,
        *,
        requester: str,
        task: str,
        fields: int,
        by_number: bool = False,
        time: int | None = None,
        detail: str = "",
    ) -> bytes:
        """A lookup by 住民票コード (by 個人番号 when `by_number`), audited, answered as
        the query service's encoded `Found` showing the fields of the mask `fields`
        (bit i: ANSWER_FIELDS[i]); returned once its audit entry is durable."""

    def search(
        self,
        name: str,
        birth_date: str,
        sex: int,
        address: str | None = None,
        *,
        requester: str,
        task: str,
        limit: int = 20,
        time: int | None = None,
        detail: str = "",
    ) -> SearchResult:
        """Four-item search: `name` is the name (kanji, alias) or the reading (katakana,
        hiragana, half-width), normalised by `normalize_reading`; candidates (active and
        removed) are ranked by address similarity."""

    def confirm(
        self,
        codes: list[str] | bytes,
        *,
        requester: str,
        task: str,
        time: int | None = None,
        detail: str = "",
    ) -> ConfirmResult:
        """Batch confirmation (一括提供): codes as str, or as concatenated 11-byte codes."""

    def audit_log(
        self,
        kind: str,
        *,
        requester: str,
        task: str,
        allowed: bool,
        reason: str = "",
        items: int = 1,
        codes: list[str] = ...,
        time: int | None = None,
        detail: str = "",
    ) -> int:
        """Append an entry for something not answered here (a denial, a disclosure)."""

    def audit_entries(
        self, start: int | None = None, end: int | None = None, *, with_codes: bool = False
    ) -> list[AuditEntry]:
        """Entries with start <= time < end (µs), in time order."""

    def audit_entry(self, id: int, *, with_codes: bool = False) -> AuditEntry | None: ...
    def codes_of(self, code: str) -> list[str]:
        """Every 住民票コード of the resident of `code`: `code` first, then its current
        code and former ones (code changes followed both ways)."""

    def audit_touching(self, code: str) -> list[AuditEntry]:
        """Entries whose answers touched the record `code` (its provision history)."""

    def audit_verify(self, checkpoints: list[tuple[int, bytes]] | None = None) -> AuditVerification:
        """Walk the hash chain; `checkpoints` are (id, entry hash) pairs kept elsewhere."""

    def audit_purge(
        self, before: int, *, requester: str, task: str, time: int | None = None, detail: str = ""
    ) -> PurgeResult:
        """Remove the oldest entries up to the first at or after `before` (µs); logged."""

    def audit_head(self) -> tuple[int, int, bytes]:
        """(first kept id, last id, SHA-256 of the last entry): a checkpoint."""

    def audit_commit_counts(self) -> tuple[int, int]:
        """(durable commits the audit group commit made, entries they held) since opened."""

    def audit_commit_busy_us(self) -> int:
        """Wall time (µs) the group commit's leaders spent writing and committing
        groups since opened (next to the elapsed time: whether the commits bound the
        rate)."""

# --- query results --------------------------------------------------------------------
ANSWER_FIELDS: tuple[str, ...]
"""The fields an answer may show, in its order: bit i of `Store.lookup_answer`'s
`fields` mask shows ANSWER_FIELDS[i] (the order of `jukisync.query.policy.Field`)."""
CONFIRM_REASONS: tuple[str, ...]
"""The reasons `ConfirmResult.reason` codes: code n is CONFIRM_REASONS[n - 1]."""

@final
class LookupResult:
    @property
    def record(self) -> Record | None: ...
    @property
    def redirected_from(self) -> str | None:
        """The code asked for, when the record has moved to a new code since."""

    @property
    def audit_id(self) -> int: ...

@final
class Candidate:
    @property
    def record(self) -> Record: ...
    @property
    def score(self) -> float:
        """Address similarity in [0, 1] (0 when no address was given)."""

    @property
    def matched(self) -> Literal["reading", "name", "both"]: ...

@final
class SearchResult:
    @property
    def candidates(self) -> list[Candidate]: ...
    @property
    def total(self) -> int:
        """Candidates found before the limit."""

    @property
    def audit_id(self) -> int: ...

@final
class ConfirmResult:
    @property
    def status(self) -> bytes:
        """One byte per code: 0 unknown, 1 current, 2 moved out, 3 removed."""

    @property
    def reason(self) -> bytes:
        """One byte per code: 0 none, n = CONFIRM_REASONS[n - 1]."""

    @property
    def changed_on(self) -> bytes:
        """Four bytes per code: little-endian u32 YYYYMMDD (0 unknown)."""

    @property
    def redirected(self) -> dict[int, str]:
        """Request index -> the code the record lives under now."""

    @property
    def touched(self) -> int:
        """Records whose information the answer gave."""

    @property
    def audit_id(self) -> int: ...
    def __len__(self) -> int: ...
    def counts(self) -> dict[str, int]: ...

@final
class AuditEntry:
    @property
    def id(self) -> int: ...
    @property
    def time(self) -> int:
        """µs since the epoch (UTC)."""

    @property
    def requester(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def kind(self) -> str:
        """code, kojin_bango, search, confirm, purge, or what `audit_log` was given."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str:
        """Why it was denied ('' when allowed)."""

    @property
    def items(self) -> int:
        """Subjects asked about: 1 per lookup or search, n per batch of n codes."""

    @property
    def touched(self) -> int:
        """Records the answer gave information on."""

    @property
    def codes(self) -> list[str] | None:
        """The touched codes (None unless read `with_codes`)."""

    @property
    def detail(self) -> str: ...

@final
class AuditVerification:
    @property
    def ok(self) -> bool: ...
    @property
    def entries(self) -> int: ...
    @property
    def first_id(self) -> int: ...
    @property
    def last_id(self) -> int: ...
    @property
    def head(self) -> bytes: ...
    @property
    def problems(self) -> list[tuple[int, str]]:
        """(entry id, what is wrong), at most 100."""

@final
class PurgeResult:
    @property
    def purged(self) -> int: ...
    @property
    def first_kept(self) -> int: ...
    @property
    def anchor(self) -> bytes:
        """The hash the first kept entry chains to."""

    @property
    def audit_id(self) -> int:
        """The entry logging this purge."""
