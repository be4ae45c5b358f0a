"""Explaining a config or policy file that does not decode: where, what, the value at
fault with its secrets hidden, and the key probably meant for an unknown one.

Every message about a config or a connection goes through `redact_text` (or `redact`
for a value): a password in a URL (`amqp://user:secret@host`) and the value of any
key naming a secret are replaced by `***`, so a typo in `[broker]` cannot put the
broker password into a terminal, a log or a ticket.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

__all__ = ["HIDDEN", "explain", "field_names", "redact", "redact_text", "suggest"]

HIDDEN: Final = "***"
# scheme://user:password@ (the password may hold anything but '@' and whitespace)
_URL_PASSWORD: Final = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s@]*@")
# keys whose values are secrets (key material, passwords, tokens), whatever the file
_SECRET_KEY: Final = re.compile(
    r"pass(word|phrase)?|secret|token|credential|private|seed|signing_key_material",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it hidden."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", text)


def redact(value: object, key: str = "") -> object:
    """A copy of a decoded TOML value fit to print: secrets hidden at any depth."""
    if key and _SECRET_KEY.search(key):
        return HIDDEN
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def suggest(name: str, known: Sequence[str]) -> str:
    """' (did you mean `x`?)' for the closest of `known`, or ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _struct_of(info: mi.Type, raw: object) -> mi.StructType | None:
    """The Struct a value decodes as: through Optional and tagged unions."""
    if isinstance(info, mi.StructType):
        return info
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if isinstance(t, mi.StructType)]
        if len(structs) == 1:
            return structs[0]
        for s in structs:
            if isinstance(raw, dict) and s.tag_field is not None and raw.get(s.tag_field) == s.tag:
                return s
    return None


def _at(info: mi.Type, raw: object, parts: Sequence[str]) -> tuple[mi.Type | None, object]:
    for part in parts:
        if part.isdigit() and isinstance(raw, list):
            inner = info
            if isinstance(inner, mi.UnionType):
                inner = next((t for t in inner.types if isinstance(t, mi.ListType)), inner)
            if not isinstance(inner, mi.ListType | mi.SetType | mi.FrozenSetType):
                return None, None
            info, raw = inner.item_type, raw[int(part)] if int(part) < len(raw) else None
            continue
        struct = _struct_of(info, raw)
        if struct is None:
            return None, None
        field = next((f for f in struct.fields if f.name == part), None)
        if field is None:
            return None, None
        info = field.type
        raw = raw.get(part) if isinstance(raw, dict) else None
    return info, raw


def field_names(root: Any, raw: object, where: str) -> list[str]:
    """The keys the table at `where` (`broker`, `requesters[0]`) may hold."""
    parts = [p for p in where.replace("[", ".").replace("]", "").split(".") if p]
    info, value = _at(mi.type_info(root), raw, parts)
    struct = _struct_of(info, value) if info is not None else None
    if struct is None:
        return []
    names = [f.encode_name for f in struct.fields]
    return names + ([struct.tag_field] if struct.tag_field else [])


def _path_value(raw: object, where: str) -> tuple[bool, object]:
    value = raw
    for part in where.replace("[", ".").replace("]", "").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def explain(exc: msgspec.ValidationError, raw: object, root: Any) -> tuple[str, str]:
    """(where, what) of a validation error: `where` like `broker.prefetch` (empty at
    the top), `what` the problem with the value at fault (secrets hidden) and, for an
    unknown key, the key probably meant."""
    message = str(exc)
    marker = " - at `$"
    what, where = message, ""
    if marker in message:
        what, _, at = message.rpartition(marker)
        where = at.rstrip("`").lstrip(".")
    unknown = _UNKNOWN.match(what)
    if unknown is not None:
        name = unknown["name"]
        hint = suggest(name, field_names(root, raw, where))
        return where, redact_text(f"unknown field `{name}`{hint}")
    found, value = _path_value(raw, where) if where else (False, None)
    if found:
        last = where.replace("]", "").replace("[", ".").rsplit(".", 1)[-1]
        what = f"{redact(value, last)!r}: {what}"
    return where, redact_text(what)
