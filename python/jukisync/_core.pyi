# Type stub for the Rust extension `jukisync._core` (rust/py). Checked by mypy.stubtest.
from typing import Literal, TypeAlias, final

__all__ = [
    "__version__",
    "JukisyncError",
    "MalformedError",
    "SignatureError",
    "RegistryError",
    "StoreError",
    "QuarantineError",
    "generate_signing_key",
    "public_key",
    "sign",
    "verify",
    "verify_batch",
    "sha256",
    "attestation_message",
    "normalize_reading",
    "KeyRegistry",
    "ApplyResult",
    "Record",
    "QuarantineEntry",
    "Store",
]

__version__: str

class JukisyncError(Exception): ...
class MalformedError(JukisyncError): ...
class SignatureError(JukisyncError): ...
class RegistryError(JukisyncError): ...
class StoreError(JukisyncError): ...
class QuarantineError(JukisyncError): ...

# --- crypto -------------------------------------------------------------------------
def generate_signing_key() -> bytes:
    """A new Ed25519 secret key (32-byte seed) from the OS random source."""

def public_key(secret: bytes) -> bytes: ...
def sign(secret: bytes, message: bytes) -> bytes: ...
def verify(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
def verify_batch(items: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """(public_key, message, signature) triples; batch verification, one-by-one on failure."""

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

@final
class Store:
    """A tier store: one LMDB environment owned by this object (DESIGN.md §4)."""

    def __new__(
        cls,
        path: str,
        *,
        role: Literal["aggregator", "national"],
        registry: KeyRegistry,
        centre_id: str | None = None,
        centre_key: bytes | None = None,
        centre_key_id: str | None = None,
        map_size: int = 1 << 34,
        max_bundle_bytes: int = 8 << 20,
        pending_limit: int = 10_000,
        require_attestation: bool | None = None,
    ) -> Store:
        """`centre_*` are required for an aggregator (it attests what it forwards).
        `require_attestation` defaults to True for national, False for aggregator."""

    @property
    def path(self) -> str: ...
    @property
    def role(self) -> str: ...
    def set_registry(self, registry: KeyRegistry) -> None: ...
    def apply(self, envelopes: list[bytes], received_at: int | None = None) -> list[ApplyResult]:
        """Verify and apply a batch in one write transaction, GIL released."""

    def get(self, code: str) -> Record | None: ...
    def get_many(self, codes: list[str]) -> list[Record | None]: ...
    def by_number(self, kojin_bango: str) -> Record | None: ...
    def chain_head(self, origin: str) -> tuple[int, bytes] | None:
        """(last applied seq, hash of the last applied body) of an origin."""

    def chain_heads(self) -> dict[str, tuple[int, bytes]]: ...
    def changes(self, origin: str, from_seq: int, limit: int = 1000) -> list[bytes]:
        """Envelopes (as stored) of the bundles of `origin` holding seqs >= from_seq."""

    def digest(self, municipality_prefix: str = "") -> str:
        """Hex digest of the active records whose municipality starts with the prefix."""

    def stats(self) -> dict[str, int]: ...
    def forward_batch(self, limit: int = 1000) -> list[tuple[int, bytes]]:
        """(outbox id, attested envelope) pairs waiting to be forwarded (aggregator)."""

    def forward_done(self, ids: list[int]) -> None: ...
    def quarantine(self, include_closed: bool = False) -> list[QuarantineEntry]: ...
    def quarantine_entry(self, id: int) -> QuarantineEntry: ...
    def release(self, id: int) -> ApplyResult:
        """Accept a halting bundle as it is; the origin resumes (pending drained)."""

    def drop(self, id: int) -> None:
        """Discard a quarantined bundle; a halted origin then waits for a bundle whose
        `supersedes` names the dropped bundle's hash."""

    def halted(self) -> dict[str, str]:
        """Halted origins and why."""

    def pending(self, origin: str) -> list[tuple[int, int]]:
        """(first_seq, last_seq) of the bundles of an origin waiting in pending."""
