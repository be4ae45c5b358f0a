"""`jukisync keys`: generate key pairs, build and sign the key registry, rotate, show."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import msgspec

from jukisync.cli.common import fail
from jukisync.exitcodes import ExitCode
from jukisync.trust import keys
from jukisync.wire.codes import PREFECTURES
from jukisync.wire.messages import KeyEntry, RegistryBody, SignedRegistry

__all__ = ["command"]

JST = dt.timezone(dt.timedelta(hours=9), "JST")


def parse_time(text: str) -> int:
    """Microseconds since the epoch from µs digits or ISO 8601 (no offset = Japan time)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use ISO 8601 (2026-04-01T00:00+09:00) or microseconds since 1970"
        ) from None
    if moment.tzinfo is None:
        # Operators here read clocks in Japan time (no daylight saving), as the
        # register does; an explicit offset still wins.
        moment = moment.replace(tzinfo=JST)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def format_time(us: int | None) -> str:
    if us is None:
        return "-"
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return moment.astimezone(JST).isoformat(timespec="seconds")


class TimeParam(click.ParamType[int]):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        return parse_time(str(value))


TIME = TimeParam()


def _load_root(path: Path) -> keys.KeyPair:
    try:
        return keys.load(path)
    except keys.KeyFileError as exc:
        fail("keys", ExitCode.CONFIG, str(exc))


def _load_public(path: Path) -> keys.PublicKey:
    try:
        return keys.load_public(path)
    except keys.KeyFileError as exc:
        fail("keys", ExitCode.CONFIG, str(exc))


def _write_registry(path: Path, data: bytes) -> None:
    try:
        keys.write_atomic(path, data, 0o644, overwrite=True)
    except OSError as exc:
        fail("keys", ExitCode.FAILURE, f"cannot write {path}: {exc.strerror or exc}")


# --root, --registry and --out of the commands that amend a registry (in --help order).
_AMEND_OPTIONS = (
    ("--root", "root_file", True, "Root secret key file."),
    ("--registry", "registry_file", True, "The current registry file."),
    ("--out", "out", False, "Where to write the new registry (default: replace --registry)."),
)


def _amend_options(f: Callable[..., None]) -> Callable[..., None]:
    for flag, name, required, text in reversed(_AMEND_OPTIONS):
        path = click.Path(dir_okay=False, path_type=Path)
        f = click.option(flag, name, required=required, type=path, help=text)(f)
    return f


def _amend_registry(
    root_file: Path,
    registry_file: Path,
    out: Path | None,
    key_id: str,
    change: Callable[[Sequence[KeyEntry]], list[KeyEntry]],
) -> tuple[Path, int]:
    """Read the registry signed by the root, apply `change` to its entries (KeyError:
    no such `key_id`), sign it as the next version and write it to `out` (default: in
    place). Returns where it went and its version; exits with the command's codes."""
    root = _load_root(root_file)
    try:
        current = keys.read_registry(registry_file, root.public_key)
    except keys.KeyFileError as exc:
        fail("keys", ExitCode.CONFIG, str(exc))
    version = current.version + 1
    try:
        entries = change(current.entries)
        data = keys.build_registry(entries, root.secret, version, keys.now_us())
    except KeyError:
        fail("keys", ExitCode.NOT_FOUND, f"{registry_file}: no key {key_id!r} in the registry")
    except keys.RegistryContentError as exc:
        fail("keys", ExitCode.INPUT, str(exc))
    target = registry_file if out is None else out
    _write_registry(target, data)
    return target, version


def _entry_json(e: KeyEntry) -> dict[str, Any]:
    return {
        "owner": e.owner,
        "key_id": e.key_id,
        "public_key": e.public_key.hex(),
        "not_before": e.not_before,
        "not_after": e.not_after,
        "revoked_at": e.revoked_at,
        "role": e.role or keys.role_of_owner(e.owner),
        "prefectures": list(e.prefectures),
    }


def _print_entries(body: RegistryBody) -> None:
    click.echo(f"version    {body.version}")
    click.echo(f"issued_at  {format_time(body.issued_at)}")
    click.echo(f"entries    {len(body.entries)}")
    for e in body.entries:
        revoked = f"  revoked {format_time(e.revoked_at)}" if e.revoked_at is not None else ""
        serves = f"  serves {','.join(e.prefectures)}" if e.prefectures else ""
        click.echo(
            f"  {e.owner:<10} {e.role or keys.role_of_owner(e.owner):<6} {e.key_id:<32} "
            f"{format_time(e.not_before)} .. {format_time(e.not_after)}{revoked}{serves}"
        )


@click.group(name="keys")
def command() -> None:
    """Signing keys and the signed key registry (Ed25519).

    \b
    Examples:
      jukisync keys generate --owner 352012 --out keys/
      jukisync keys generate --owner root --out keys/root/
      jukisync keys registry --root keys/root/root-*.key.json --out registry.bin keys/*.pub.json
      jukisync keys rotate --root keys/root/root-*.key.json --registry registry.bin \\
          --old 352012-1a2b3c4d5e6f --new keys/352012-new.pub.json
      jukisync keys show registry.bin --root keys/root/root-*.pub.json
    """


@command.command()
@click.option("--owner", required=True, help="Origin code (6 digits) or centre id.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the two key files (created if missing).",
)
@click.option("--key-id", help="Key id (default: OWNER-<fingerprint>).")
@click.option("--force", is_flag=True, help="Replace existing files of the same key id.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate(owner: str, out_dir: Path, key_id: str | None, force: bool, as_json: bool) -> None:
    """Generate a key pair: OUT/<key_id>.key.json (secret, mode 0600) and .pub.json.

    \b
    Examples:
      jukisync keys generate --owner 352012 --out keys/     # 下関市's signing key
      jukisync keys generate --owner centre-a --out keys/   # an aggregation centre
      jukisync keys generate --owner root --key-id root-2026 --out /secure/root/
    """
    try:
        keys.validate_owner(owner)
        if key_id is not None:
            keys.validate_key_id(key_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    pair = keys.generate(owner, key_id)
    try:
        secret_path, public_path = keys.save(pair, out_dir, overwrite=force)
    except FileExistsError as exc:
        fail("keys", ExitCode.USAGE, f"{exc}; pass --force to replace it")
    except OSError as exc:
        fail("keys", ExitCode.FAILURE, f"cannot write key files: {exc.strerror or exc}")
    if as_json:
        result = {
            "owner": pair.owner,
            "key_id": pair.key_id,
            "public_key": pair.public_key.hex(),
            "created_at": pair.created_at,
            "secret_file": str(secret_path),
            "public_file": str(public_path),
        }
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        click.echo(f"key_id  {pair.key_id}")
        click.echo(f"secret  {secret_path}")
        click.echo(f"public  {public_path}")
    click.echo(f"keep {secret_path} private; distribute {public_path.name}", err=True)


def _served_prefectures(options: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """--prefectures values as {centre id (or "" for every centre): prefectures}."""
    served: dict[str, tuple[str, ...]] = {}
    for option in options:
        centre, _, listed = option.rpartition("=")
        prefs = tuple(p.strip() for p in listed.split(",") if p.strip())
        bad = [p for p in prefs if p not in PREFECTURES]
        if bad or not prefs:
            fail("keys", ExitCode.USAGE, f"--prefectures {option}: {bad or 'none'} not 01-47")
        served[centre] = served.get(centre, ()) + prefs
    return served


@command.command()
@click.option(
    "--root",
    "root_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Root secret key file that signs the registry.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Registry file."
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="Registry version (default: the existing OUT's version + 1, or 1).",
)
@click.option("--issued-at", type=TIME, help="Issue time (default: now).")
@click.option(
    "--not-before",
    type=TIME,
    help="Start of validity of every key (default: each key's created_at).",
)
@click.option(
    "--prefectures",
    "prefectures",
    multiple=True,
    metavar="[CENTRE=]PP,PP",
    help="Prefectures (2 digits) a centre's keys attest for: CENTRE=35,34 for one "
    "centre (repeatable), or 35,34 for every centre key given. Required for centre keys.",
)
@click.argument(
    "pubkey_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def registry(
    root_file: Path,
    out: Path,
    version: int | None,
    issued_at: int | None,
    not_before: int | None,
    prefectures: tuple[str, ...],
    pubkey_files: tuple[Path, ...],
) -> None:
    """Build the key registry from public key files and sign it with the root key.

    Times are ISO 8601 (no offset means Japan time) or microseconds since 1970.
    A key's role follows its owner: a 6-digit local government code is an origin
    (signs its bundles), a centre id a centre (attests hops, only for the prefectures
    given with --prefectures). The version must grow with every registry issued; by
    default it is one more than that of the registry already at OUT (which must then
    verify under this root).

    \b
    Examples:
      jukisync keys registry --root keys/root/root-2026.key.json --out registry.bin \\
          --prefectures centre-a=35 \\
          keys/352012-*.pub.json keys/352021-*.pub.json keys/centre-a-*.pub.json
      jukisync keys registry --root root.key.json --out registry.bin --version 7 \\
          --not-before 2026-04-01T00:00 --prefectures 35,13 keys/*.pub.json
    """
    root = _load_root(root_file)
    served = _served_prefectures(prefectures)
    publics = [_load_public(p) for p in pubkey_files]
    entries = []
    for public in publics:
        serves: tuple[str, ...] = ()
        if public.role == "centre":
            serves = served.get(public.owner, served.get("", ()))
            if not serves:
                fail(
                    "keys",
                    ExitCode.USAGE,
                    f"centre key {public.key_id} serves no prefecture: "
                    f"pass --prefectures {public.owner}=35,...",
                )
        entries.append(public.entry(not_before=not_before, prefectures=serves))
    if version is None:
        version = 1
        if out.exists():
            try:
                version = keys.read_registry(out, root.public_key).version + 1
            except keys.KeyFileError as exc:
                fail("keys", ExitCode.CONFIG, f"{exc}; pass --version to replace it")
    try:
        data = keys.build_registry(
            entries, root.secret, version, keys.now_us() if issued_at is None else issued_at
        )
    except keys.RegistryContentError as exc:
        fail("keys", ExitCode.INPUT, str(exc))
    _write_registry(out, data)
    click.echo(f"{out}: version {version}, {len(entries)} keys")


@command.command()
@_amend_options
@click.option("--old", "old_key_id", required=True, help="Key id to retire.")
@click.option(
    "--new",
    "new_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Public key file of the key that takes over.",
)
@click.option("--at", "at", type=TIME, help="When the new key takes over (default: now).")
def rotate(
    root_file: Path,
    registry_file: Path,
    old_key_id: str,
    new_file: Path,
    at: int | None,
    out: Path | None,
) -> None:
    """Replace a key: the old one stops (not_after) when the new one starts.

    Bundles are checked against the key valid at their created_at, so those signed
    with the old key before AT stay valid. Writes the registry with version + 1.

    \b
    Examples:
      jukisync keys generate --owner 352012 --out keys/
      jukisync keys rotate --root root.key.json --registry registry.bin \\
          --old 352012-1a2b3c4d5e6f --new keys/352012-9f8e7d6c5b4a.pub.json \\
          --at 2032-01-01T00:00
    """
    new_key = _load_public(new_file)
    start = keys.now_us() if at is None else at
    target, version = _amend_registry(
        root_file,
        registry_file,
        out,
        old_key_id,
        lambda entries: keys.rotate(entries, old_key_id, new_key.entry(not_before=start)),
    )
    click.echo(
        f"{target}: version {version}, {old_key_id} until {format_time(start)}, "
        f"then {new_key.key_id}"
    )


def _show_key(key: keys.KeyPair | keys.PublicKey, as_json: bool) -> None:
    public = key.public if isinstance(key, keys.KeyPair) else key
    info: dict[str, Any] = {
        "kind": "secret" if isinstance(key, keys.KeyPair) else "public",
        "owner": public.owner,
        "key_id": public.key_id,
        "public_key": public.public_key.hex(),
        "fingerprint": public.fingerprint,
        "created_at": public.created_at,
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    for name, value in info.items():
        shown = format_time(value) if name == "created_at" else value
        click.echo(f"{name:<12} {shown}")


def _show_registry(path: Path, root: Path | None, as_json: bool) -> None:
    if root is None:
        try:
            signed = msgspec.msgpack.decode(path.read_bytes(), type=SignedRegistry)
            body = msgspec.msgpack.decode(signed.body, type=RegistryBody)
        except ValueError as exc:
            fail("keys", ExitCode.CONFIG, f"{path}: neither a key file nor a registry ({exc})")
        click.echo(f"{path}: signature NOT verified (pass --root to verify)", err=True)
        verified = False
    else:
        try:
            body = keys.read_registry(path, _load_public_or_pair(root).public_key)
        except keys.KeyFileError as exc:
            fail("keys", ExitCode.CONFIG, str(exc))
        verified = True
    if as_json:
        result = {
            "version": body.version,
            "issued_at": body.issued_at,
            "verified": verified,
            "entries": [_entry_json(e) for e in body.entries],
        }
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        _print_entries(body)


def _load_public_or_pair(path: Path) -> keys.PublicKey:
    try:
        key = keys.read_key_file(path, check_permissions=False)
    except keys.KeyFileError as exc:
        fail("keys", ExitCode.CONFIG, str(exc))
    return key.public if isinstance(key, keys.KeyPair) else key


@command.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--root",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Root public key file to verify a registry with.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def show(file: Path, root: Path | None, as_json: bool) -> None:
    """Show a key file (never its secret) or a registry file.

    \b
    Examples:
      jukisync keys show keys/352012-1a2b3c4d5e6f.pub.json
      jukisync keys show --json keys/352012-1a2b3c4d5e6f.key.json
      jukisync keys show registry.bin --root keys/root/root-2026.pub.json
    """
    try:
        head = file.read_bytes()[:1]
    except OSError as exc:
        fail("keys", ExitCode.CONFIG, f"{file}: cannot read: {exc.strerror or exc}")
    if head == b"{":  # key files are JSON objects; registries are MessagePack maps
        try:
            key = keys.read_key_file(file, check_permissions=False)
        except keys.KeyFileError as exc:
            fail("keys", ExitCode.CONFIG, str(exc))
        _show_key(key, as_json)
    else:
        _show_registry(file, root, as_json)


@command.command()
@_amend_options
@click.option("--key-id", "key_id", required=True, help="Key id to revoke.")
@click.option("--at", "at", type=TIME, help="Revoked from this time (default: now).")
def revoke(
    root_file: Path, registry_file: Path, key_id: str, at: int | None, out: Path | None
) -> None:
    """Revoke a key (stolen, or its machine compromised): writes the registry with
    version + 1; reload the daemons (SIGHUP) to apply it.

    Bundles signed with a revoked origin key are refused unless the first centre
    attested receiving them before the revocation; a revoked centre key's
    attestations from then on are refused (the twin centre carries the flow).

    \b
    Examples:
      jukisync keys revoke --root root.key.json --registry registry.bin \\
          --key-id centre-east-k1
      jukisync keys revoke --root root.key.json --registry registry.bin \\
          --key-id 352012-1a2b3c4d5e6f --at 2026-06-10T09:30
      systemctl reload jukisync-national jukisync-aggregator@centre-west

    \b
    Exit codes: 0 written, 3 bad root or registry file, 4 already revoked by then,
    5 no such key in the registry.
    """
    when = keys.now_us() if at is None else at
    target, version = _amend_registry(
        root_file,
        registry_file,
        out,
        key_id,
        lambda entries: keys.revoke(entries, key_id, when),
    )
    click.echo(f"{target}: version {version}, {key_id} revoked from {format_time(when)}")
