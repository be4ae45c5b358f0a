"""Test kit for queries and the audit trail: a small catalogue and policy, and a store
holding residents in known states (applied as real signed bundles)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import msgspec

from jukisync import Store
from jukisync.query.policy import Policy, load_policy
from jukisync.wire.messages import ChangeReason, Sex, Update
from netkit import HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

CATALOGUE = """
authority = "テスト県"
as_of = 2026-04-01

[[categories]]
code = "C1"
name = "テスト条例による事務"

[[tasks]]
code = "T-FULL"
name = "全項目を見る事務"
basis = "beppyo5"
provision = "住民基本台帳法第30条の15第1項第1号・別表第5"
fields = ["juminhyo_code", "name", "name_kana", "former_surname", "alias", "birth_date",
          "sex", "address", "municipality", "status", "reason", "changed_on"]

[[tasks]]
code = "T-ADDR"
name = "住所等確認の事務"
basis = "ordinance"
category = "C1"
provision = "テスト条例"
enacted = 2020-04-01
fields = ["juminhyo_code", "name", "address", "status"]

[[tasks]]
code = "T-NUM"
name = "番号法の事務"
basis = "beppyo1"
provision = "番号法第9条"
my_number_act = true
fields = ["juminhyo_code", "kojin_bango", "name", "status", "reason", "changed_on"]

[[tasks]]
code = "T-NOSTATUS"
name = "状態を見ない事務"
basis = "beppyo5"
provision = "別表第5"
fields = ["name", "address"]

[[tasks]]
code = "T-OFF"
name = "廃止された事務"
basis = "beppyo5"
provision = "別表第5"
fields = ["name"]
in_use = false

[[tasks]]
code = "T-CODEONLY"
name = "コードでだけ引く事務"
basis = "consent"
provision = "住民基本台帳法第30条の15第1項第3号"
fields = ["juminhyo_code", "name", "status"]
kinds = ["code"]
"""

POLICY = """
catalogue = "catalogue.toml"

[anomalies]
night_start = 22:00:00
night_end = 06:00:00
mass_window_minutes = 10
mass_queries = 5
denial_window_minutes = 10
denials = 3

[[auditors]]
id = "auditor"
name = "監査担当"

[[auditors]]
id = "auditor-1"
name = "監査担当1"

[[requesters]]
id = "agency-a"
name = "テスト庁"
tasks = ["T-FULL", "T-ADDR", "T-NOSTATUS", "T-OFF", "T-CODEONLY"]

[[requesters]]
id = "agency-n"
name = "番号庁"
tasks = ["T-NUM"]

[[requesters]]
id = "small"
name = "小さな依頼者"
tasks = ["T-FULL"]
max_batch = 10
"""


def write_policy(directory: Path, catalogue: str = CATALOGUE, policy: str = POLICY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "catalogue.toml").write_text(catalogue, encoding="utf-8")
    path = directory / "policy.toml"
    path.write_text(policy, encoding="utf-8")
    return path


def make_policy(directory: Path) -> Policy:
    return load_policy(write_policy(directory))


# Resident n of a municipality: netkit.update's code and number.
def code(origin: str, n: int) -> str:
    return update(origin, n).juminhyo_code


def person(
    origin: str,
    n: int,
    *,
    name: str = "山口 太郎",
    kana: str = "ヤマグチ タロウ",
    address: str | None = None,
    birth: dt.date = dt.date(1980, 4, 1),
    sex: Sex = Sex.MALE,
    reason: ChangeReason = ChangeReason.BIRTH,
    changed_on: dt.date = dt.date(2024, 4, 1),
    alias: str | None = None,
) -> Update:
    u = update(origin, n, reason=reason, name=name, changed_on=changed_on)
    return msgspec.structs.replace(
        u,
        name_kana=kana,
        address=address if address is not None else u.address,
        birth_date=birth,
        sex=sex,
        alias=alias,
    )


class Registry:
    """Origins with keys and a store opened on their registry."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ring = KeyRing()
        self.origins = {o: Origin(self.ring, o) for o in (YAMAGUCHI_CITY, HAGI)}

    def open(self, name: str = "store") -> Store:
        return Store(
            str(self.directory / name),
            role="national",
            registry=self.ring.registry(),
            require_attestation=False,
            map_size=1 << 30,
        )

    def apply(self, store: Store, updates: Sequence[Update], *, size: int = 1000) -> None:
        by_origin: dict[str, list[Update]] = {}
        for u in updates:
            by_origin.setdefault(u.municipality, []).append(u)
        envelopes = [
            self.origins[o].bundle(us[i : i + size])
            for o, us in by_origin.items()
            for i in range(0, len(us), size)
        ]
        results = store.apply(envelopes)
        bad = [r for r in results if r.status != "applied"]
        assert not bad, bad[:3]
