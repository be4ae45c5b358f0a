"""Signing keys on disk and the signed key registry (DESIGN.md §7).

A key pair is two JSON files, so an operator can read them and ship the public half:

    <key_id>.key.json  {owner, key_id, secret, public_key, created_at}   mode 0600
    <key_id>.pub.json  {owner, key_id, public_key, created_at}

`secret` and `public_key` are hex (the 32-byte Ed25519 seed and public key);
`created_at` is microseconds since the Unix epoch, like every time on the wire.

The registry file is an encoded `SignedRegistry` (messages.py): a `RegistryBody`
signed by the root key, whose public key every node has in its config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from jukisync import _core, clock
from jukisync.wire.codes import PREFECTURES
from jukisync.wire.messages import KeyEntry, RegistryBody, SignedRegistry, encode

__all__ = [
    "KeyFileError",
    "KeyPair",
    "PublicKey",
    "PublicKeyFile",
    "RegistryContentError",
    "SecretKeyFile",
    "build_registry",
    "check_entries",
    "entries_for",
    "generate",
    "load",
    "load_public",
    "load_registry",
    "now_us",
    "paths_for",
    "read_key_file",
    "read_registry",
    "revoke",
    "role_of_owner",
    "rotate",
    "save",
    "validate_key_id",
    "validate_owner",
    "write_atomic",
]

SECRET_SUFFIX = ".key.json"
PUBLIC_SUFFIX = ".pub.json"

# A key id becomes a file name: no separators, no leading dot, bounded length.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Owners are origins (6-digit local government codes) or centres (a name).


class KeyFileError(ValueError):
    """A key or registry file is missing or invalid; names the file and the field."""

    def __init__(self, path: Path | str, field: str | None, problem: str) -> None:
        where = f"{path}: {field}" if field else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.field = field
        self.problem = problem


class RegistryContentError(ValueError):
    """Entries that must not go into a registry (duplicate ids, bad owner, ...)."""


# --- file formats ---------------------------------------------------------------------


class SecretKeyFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    owner: str
    key_id: str
    secret: str
    public_key: str
    created_at: int


class PublicKeyFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    owner: str
    key_id: str
    public_key: str
    created_at: int


@dataclasses.dataclass(frozen=True)
class PublicKey:
    owner: str
    key_id: str
    public_key: bytes
    created_at: int

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()[:16]

    @property
    def role(self) -> Literal["origin", "centre"]:
        """What this key may sign, from its owner: an origin's bundles or a centre's
        hop attestations."""
        return _core.key_role(self.owner)

    def entry(
        self,
        not_before: int | None = None,
        not_after: int | None = None,
        prefectures: Sequence[str] = (),
    ) -> KeyEntry:
        """The registry entry of this key, valid from its creation unless told; a
        centre key attests only for `prefectures`."""
        return KeyEntry(
            owner=self.owner,
            key_id=self.key_id,
            public_key=self.public_key,
            not_before=self.created_at if not_before is None else not_before,
            not_after=not_after,
            role=self.role,
            prefectures=list(prefectures),
        )


@dataclasses.dataclass(frozen=True)
class KeyPair:
    owner: str
    key_id: str
    # Kept out of repr so a logged or printed KeyPair never shows the secret.
    secret: bytes = dataclasses.field(repr=False)
    public_key: bytes
    created_at: int

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.owner, self.key_id, self.public_key, self.created_at)

    def sign(self, message: bytes) -> bytes:
        return _core.sign(self.secret, message)


def now_us() -> int:
    return clock.now_us()


def role_of_owner(owner: str) -> str:
    """ "origin" or "centre" as the core infers it; "?" for an owner that is neither."""
    try:
        return _core.key_role(owner)
    except ValueError:
        return "?"


def validate_owner(owner: str) -> str:
    """Return `owner` if it is a valid origin code or centre id, else raise ValueError.

    The rule is the core's (`_core.key_role`), the one the nodes load registries by.
    """
    _core.key_role(owner)
    return owner


def validate_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(
            f"key id {key_id!r} must be 1-64 letters, digits, '_', '.', '-' "
            "and not start with '.', '_' or '-'"
        )
    return key_id


def generate(owner: str, key_id: str | None = None, *, created_at: int | None = None) -> KeyPair:
    """A new key pair for `owner` (an origin code or a centre id).

    The default key id is the owner plus a fingerprint of the public key, so two keys
    of one owner (before and after a rotation) never share an id.
    """
    validate_owner(owner)
    secret = _core.generate_signing_key()
    public = _core.public_key(secret)
    if key_id is None:
        key_id = f"{owner}-{hashlib.sha256(public).hexdigest()[:12]}"
    validate_key_id(key_id)
    return KeyPair(owner, key_id, secret, public, now_us() if created_at is None else created_at)


# --- writing ----------------------------------------------------------------------------


def paths_for(directory: Path | str, key_id: str) -> tuple[Path, Path]:
    """(secret file, public file) of a key id in a directory."""
    directory = Path(directory)
    validate_key_id(key_id)
    return directory / f"{key_id}{SECRET_SUFFIX}", directory / f"{key_id}{PUBLIC_SUFFIX}"


def write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    # Write a temporary file with its final mode from the start (the secret is never
    # readable by others, not even for an instant), fsync, then move it into place:
    # a crash leaves either the old file or the new one, never half a key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists, unlike rename
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json(obj: msgspec.Struct) -> bytes:
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"


def save(pair: KeyPair, directory: Path | str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the secret (0600) and public key files; return their paths.

    Refuses (FileExistsError) to replace an existing key file unless `overwrite`:
    a lost secret key cannot be recovered.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = paths_for(directory, pair.key_id)
    if not overwrite:
        for path in (secret_path, public_path):
            if path.exists():
                raise FileExistsError(f"{path} already exists")
    secret_file = SecretKeyFile(
        owner=pair.owner,
        key_id=pair.key_id,
        secret=pair.secret.hex(),
        public_key=pair.public_key.hex(),
        created_at=pair.created_at,
    )
    public_file = PublicKeyFile(
        owner=pair.owner,
        key_id=pair.key_id,
        public_key=pair.public_key.hex(),
        created_at=pair.created_at,
    )
    write_atomic(secret_path, _json(secret_file), 0o600, overwrite=overwrite)
    write_atomic(public_path, _json(public_file), 0o644, overwrite=overwrite)
    return secret_path, public_path


# --- reading ----------------------------------------------------------------------------

_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)")
_NAMED_FIELD = re.compile(r"field `([^`]+)`")


def _field_of(error: msgspec.ValidationError) -> str | None:
    message = str(error)
    match = _AT_FIELD.search(message) or _NAMED_FIELD.search(message)
    return match.group(1) if match else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, None, f"cannot read: {exc.strerror or exc}") from exc


def _hex32(path: Path, field: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32 or len(value) != 64:
        raise KeyFileError(path, field, "must be 64 hex digits (32 bytes)")
    return raw


def _check_common(path: Path, owner: str, key_id: str, created_at: int) -> None:
    for field, check, value in (
        ("owner", validate_owner, owner),
        ("key_id", validate_key_id, key_id),
    ):
        try:
            check(value)
        except ValueError as exc:
            raise KeyFileError(path, field, str(exc)) from None
    if created_at < 0:
        raise KeyFileError(path, "created_at", "must be microseconds since 1970, not negative")


def read_key_file(path: Path | str, *, check_permissions: bool = True) -> KeyPair | PublicKey:
    """Read a secret or a public key file, whichever `path` is, checking every field."""
    path = Path(path)
    data = _read(path)
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise KeyFileError(path, None, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise KeyFileError(path, None, "not a key file (expected a JSON object)")
    kind: type[SecretKeyFile | PublicKeyFile] = SecretKeyFile if "secret" in raw else PublicKeyFile
    try:
        parsed = msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise KeyFileError(path, _field_of(exc), str(exc)) from None
    _check_common(path, parsed.owner, parsed.key_id, parsed.created_at)
    public = _hex32(path, "public_key", parsed.public_key)
    if isinstance(parsed, PublicKeyFile):
        return PublicKey(parsed.owner, parsed.key_id, public, parsed.created_at)

    if check_permissions and os.name == "posix":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            # As ssh does: a secret readable by others is as good as leaked.
            raise KeyFileError(
                path, "secret", f"file mode {mode:04o} lets others read it; chmod 600 it"
            )
    secret = _hex32(path, "secret", parsed.secret)
    if _core.public_key(secret) != public:
        raise KeyFileError(path, "public_key", "does not belong to the secret in the same file")
    return KeyPair(parsed.owner, parsed.key_id, secret, public, parsed.created_at)


def load(path: Path | str, *, check_permissions: bool = True) -> KeyPair:
    """A secret key file (the whole pair)."""
    key = read_key_file(path, check_permissions=check_permissions)
    if not isinstance(key, KeyPair):
        raise KeyFileError(path, "secret", "missing: this is a public key file")
    return key


def load_public(path: Path | str) -> PublicKey:
    """A public key file; a secret key file is refused, so secrets are not passed around."""
    key = read_key_file(path, check_permissions=False)
    if isinstance(key, KeyPair):
        raise KeyFileError(
            path, "secret", f"this is a secret key file; pass the {PUBLIC_SUFFIX} file instead"
        )
    return key


# --- the registry -----------------------------------------------------------------------


def check_entries(entries: Sequence[KeyEntry]) -> None:
    """Raise RegistryContentError if the entries cannot form a registry."""
    if not entries:
        raise RegistryContentError("a registry needs at least one key")
    seen_ids: set[str] = set()
    seen_keys: dict[bytes, str] = {}
    for e in entries:
        try:
            role = _core.key_role(e.owner)
            validate_key_id(e.key_id)
        except ValueError as exc:
            raise RegistryContentError(str(exc)) from None
        if e.role is not None and e.role != role:
            raise RegistryContentError(
                f"key {e.key_id!r}: role {e.role}, but {e.owner!r} is {role}"
            )
        if role == "origin" and e.prefectures:
            raise RegistryContentError(f"key {e.key_id!r}: an origin's key serves no prefectures")
        bad = [p for p in e.prefectures if p not in PREFECTURES]
        if bad:
            raise RegistryContentError(f"key {e.key_id!r}: {bad[0]!r} is not a prefecture 01-47")
        if e.key_id in seen_ids:
            raise RegistryContentError(f"key id {e.key_id!r} appears twice")
        seen_ids.add(e.key_id)
        if len(e.public_key) != 32:
            raise RegistryContentError(f"key {e.key_id!r}: public key is not 32 bytes")
        # One key for two owners would let one origin sign as another.
        other = seen_keys.setdefault(e.public_key, e.key_id)
        if other != e.key_id:
            raise RegistryContentError(f"keys {other!r} and {e.key_id!r} share a public key")
        if e.not_before < 0:
            raise RegistryContentError(f"key {e.key_id!r}: not_before is negative")
        if e.not_after is not None and e.not_after <= e.not_before:
            raise RegistryContentError(f"key {e.key_id!r}: not_after is not after not_before")


def entries_for(
    publics: Iterable[PublicKey],
    centre_prefectures: Sequence[str],
    *,
    not_before: int | None = None,
) -> list[KeyEntry]:
    """Registry entries of `publics`; centre keys serve `centre_prefectures`."""
    return [
        p.entry(
            not_before=not_before,
            prefectures=centre_prefectures if p.role == "centre" else (),
        )
        for p in publics
    ]


def build_registry(
    entries: Iterable[KeyEntry], root_secret: bytes, version: int, issued_at: int
) -> bytes:
    """Encode and sign a registry with the root key; returns the SignedRegistry bytes."""
    entries = list(entries)
    check_entries(entries)
    if version < 1:
        raise RegistryContentError(f"version must be at least 1, not {version}")
    body = encode(RegistryBody(version=version, issued_at=issued_at, entries=entries))
    return encode(SignedRegistry(body=body, sig=_core.sign(root_secret, body)))


def read_registry(path: Path | str, root_public_key: bytes) -> RegistryBody:
    """Decode a registry file after checking its root signature (for editing and show).

    Nodes load registries with `load_registry` (the Rust core); this is the Python
    reading used by the tools that change a registry, which must not trust a file the
    root did not sign either.
    """
    path = Path(path)
    data = _read(path)
    try:
        signed = msgspec.msgpack.decode(data, type=SignedRegistry)
    except ValueError as exc:  # msgspec errors, and UnicodeDecodeError for bad UTF-8
        raise KeyFileError(path, None, f"not a signed registry ({exc})") from None
    if not _core.verify(root_public_key, signed.body, signed.sig):
        raise KeyFileError(path, "sig", "not signed by this root key")
    try:
        return msgspec.msgpack.decode(signed.body, type=RegistryBody)
    except ValueError as exc:
        raise KeyFileError(path, "body", f"signed, but not a registry body ({exc})") from None


def load_registry(path: Path | str, root_public_key: bytes) -> _core.KeyRegistry:
    """The registry as the Rust core uses it; raises _core.RegistryError if it fails."""
    return _core.KeyRegistry(_read(Path(path)), root_public_key)


def rotate(entries: Sequence[KeyEntry], old_key_id: str, new: KeyEntry) -> list[KeyEntry]:
    """Retire `old_key_id` when `new` takes over: old.not_after = new.not_before.

    Validity is judged at a bundle's `created_at`, so bundles signed with the old key
    before the switch stay valid, and at every instant exactly one of the two keys is
    valid (not_after is exclusive). Returns the new list; `entries` is not changed.
    """
    by_id = {e.key_id: e for e in entries}
    old = by_id.get(old_key_id)
    if old is None:
        raise KeyError(old_key_id)
    if new.owner != old.owner:
        raise RegistryContentError(
            f"new key {new.key_id!r} belongs to {new.owner!r}, not to {old.owner!r}"
        )
    if old.revoked_at is not None:
        raise RegistryContentError(f"key {old_key_id!r} is revoked; add the new key instead")
    if new.not_before <= old.not_before:
        raise RegistryContentError(
            f"new key {new.key_id!r} must start after {old_key_id!r} started"
        )
    if old.not_after is not None and old.not_after < new.not_before:
        raise RegistryContentError(
            f"key {old_key_id!r} expires before the new key starts: "
            "bundles created in between would have no valid key"
        )
    retired = msgspec.structs.replace(old, not_after=new.not_before)
    rotated = [retired if e.key_id == old_key_id else e for e in entries]
    if not new.prefectures and old.prefectures:
        # A centre's new key serves what its old one served.
        new = msgspec.structs.replace(new, prefectures=old.prefectures)
    rotated.append(new)
    check_entries(rotated)
    return rotated


def revoke(entries: Sequence[KeyEntry], key_id: str, at: int) -> list[KeyEntry]:
    """Revoke `key_id` from `at` (µs): a bundle signed with it is refused unless the
    first centre attested receiving it before `at` (a stolen key cannot backdate), and
    a revoked centre key's attestations made from `at` on are refused. A revocation is
    never moved later or undone: revoke again only to bring it earlier."""
    by_id = {e.key_id: e for e in entries}
    old = by_id.get(key_id)
    if old is None:
        raise KeyError(key_id)
    if old.revoked_at is not None and old.revoked_at <= at:
        raise RegistryContentError(f"key {key_id!r} is already revoked from {old.revoked_at}")
    revoked = msgspec.structs.replace(old, revoked_at=at)
    return [revoked if e.key_id == key_id else e for e in entries]
