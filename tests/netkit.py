"""Test kit for publisher and network tests: valid updates, keys and a signed registry.

Deliberately independent of `jukisync.synth` so these tests pin the publisher and the
nodes, not the generator.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from jukisync import _core
from jukisync.config import HttpConfig, NationalConfig, TrustConfig
from jukisync.trust import storedir
from jukisync.wire.codes import PREFECTURES, kojin_bango_check_digit
from jukisync.wire.messages import (
    ChangeReason,
    KeyEntry,
    RegistryBody,
    Sex,
    SignedRegistry,
    Update,
    encode,
)

YAMAGUCHI_CITY = "352039"  # 山口市
HAGI = "352047"  # 萩市
CHIYODA = "131016"  # 千代田区


def kojin_bango(n: int) -> str:
    first11 = f"{n:011d}"
    return first11 + str(kojin_bango_check_digit(first11))


def update(
    origin: str,
    n: int,
    *,
    reason: ChangeReason = ChangeReason.BIRTH,
    name: str = "山口 太郎",
    changed_on: dt.date = dt.date(2024, 4, 1),
) -> Update:
    """A valid update for resident number `n` of municipality `origin` (seq set later)."""
    return Update(
        seq=1,
        juminhyo_code=f"{int(origin) * 100000 + n:011d}",
        previous_juminhyo_code=None,
        kojin_bango=kojin_bango(int(origin) * 100000 + n),
        name=name,
        name_kana="ヤマグチ タロウ",
        former_surname=None,
        alias=None,
        birth_date=dt.date(1990, 1, 1) + dt.timedelta(days=n % 10000),
        sex=Sex.MALE if n % 2 else Sex.FEMALE,
        address=f"山口県山口市亀山町{n}番地",
        municipality=origin,
        reason=reason,
        changed_on=changed_on,
        recorded_at=time.time_ns() // 1000,
    )


# Test centres attest for every prefecture: the tests choose their origins freely.
CENTRE_PREFECTURES = tuple(sorted(PREFECTURES))


class KeyRing:
    """Signing keys of origins and centres, and a registry signed by a fresh root key."""

    def __init__(self) -> None:
        self.root = _core.generate_signing_key()
        self.keys: dict[str, tuple[str, bytes]] = {}  # owner -> (key id, secret)

    def add(self, owner: str) -> tuple[str, bytes]:
        key = (f"{owner}-k1", _core.generate_signing_key())
        self.keys[owner] = key
        return key

    def key_id(self, owner: str) -> str:
        return self.keys[owner][0]

    def secret(self, owner: str) -> bytes:
        return self.keys[owner][1]

    def signed_registry(self) -> bytes:
        entries = [
            KeyEntry(
                owner=o,
                key_id=k,
                public_key=_core.public_key(s),
                not_before=0,
                prefectures=list(CENTRE_PREFECTURES) if _core.key_role(o) == "centre" else [],
            )
            for o, (k, s) in self.keys.items()
        ]
        body = encode(RegistryBody(version=1, issued_at=0, entries=entries))
        return encode(SignedRegistry(body=body, sig=_core.sign(self.root, body)))

    def registry(self) -> _core.KeyRegistry:
        return _core.KeyRegistry(self.signed_registry(), _core.public_key(self.root))

    def national_config(self, directory: Path) -> NationalConfig:
        """A national node's config trusting this ring (trust files written under
        `directory / "trust"`, the store at `directory / "store"`), for
        `tier.assembly.assemble_tier` as the daemon reads it."""
        trust_dir = directory / "trust"
        storedir.write_trust(trust_dir, self.signed_registry(), _core.public_key(self.root))
        trust = TrustConfig(
            root_public_key=str(trust_dir / storedir.ROOT_FILE),
            registry=str(trust_dir / storedir.REGISTRY_FILE),
        )
        return NationalConfig(store=str(directory / "store"), trust=trust, http=HttpConfig(port=0))
