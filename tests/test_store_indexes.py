"""The indexes are functions of the records, whatever order updates arrive in (issue 9
case 3: a 住民票コード change applied before the old municipality's last update once
left `by_number` empty on every tier), and `check` finds it when they are not."""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from jukisync import Store
from jukisync.wire.messages import ChangeReason, Update
from netkit import CHIYODA, HAGI, YAMAGUCHI_CITY, KeyRing, update
from storekit import Origin

NEW_CODE = "35204799990"


def _resident_story(ring: KeyRing) -> tuple[list[bytes], Update]:
    """One resident: born in 山口市 (code A), moves to 萩市, which changes the code to
    B, then moves on to 千代田区. Six bundles from three origins."""
    m1, m2, m3 = (Origin(ring, o) for o in (YAMAGUCHI_CITY, HAGI, CHIYODA))
    d = dt.date(2024, 4, 1)
    born = update(YAMAGUCHI_CITY, 7, changed_on=d)
    out1 = msgspec.structs.replace(
        born, reason=ChangeReason.MOVE_OUT, changed_on=d + dt.timedelta(days=10)
    )
    in2 = msgspec.structs.replace(
        born,
        reason=ChangeReason.MOVE_IN,
        municipality=HAGI,
        address="山口県萩市堀内1-1",
        changed_on=d + dt.timedelta(days=11),
    )
    recode = msgspec.structs.replace(
        in2,
        reason=ChangeReason.JUMINHYO_CODE_CHANGE,
        previous_juminhyo_code=born.juminhyo_code,
        juminhyo_code=NEW_CODE,
        changed_on=d + dt.timedelta(days=20),
    )
    out2 = msgspec.structs.replace(
        recode,
        reason=ChangeReason.MOVE_OUT,
        previous_juminhyo_code=None,
        changed_on=d + dt.timedelta(days=30),
    )
    in3 = msgspec.structs.replace(
        out2,
        reason=ChangeReason.MOVE_IN,
        municipality=CHIYODA,
        address="東京都千代田区永田町1-7-1",
        changed_on=d + dt.timedelta(days=31),
    )
    bundles = [
        m1.bundle([born]),
        m1.bundle([out1]),
        m2.bundle([in2]),
        m2.bundle([recode]),
        m2.bundle([out2]),
        m3.bundle([in3]),
    ]
    return bundles, in3


@functools.cache
def story() -> tuple[Path, KeyRing, list[bytes], Update]:
    ring = KeyRing()
    bundles, last = _resident_story(ring)
    return Path(tempfile.mkdtemp(prefix="jukisync-indexes-")), ring, bundles, last


def _store(path: Path, ring: KeyRing) -> Store:
    return Store(str(path), role="national", registry=ring.registry(), require_attestation=False)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_number_index_holds_the_resident_in_any_order(data: st.DataObject) -> None:
    root, ring, bundles, last = story()
    order = data.draw(st.permutations(bundles))
    extra = data.draw(st.lists(st.sampled_from(bundles), max_size=3))
    order = order + extra
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3)))
    store = _store(Path(tempfile.mkdtemp(dir=root)), ring)
    for start, end in zip([0, *cuts], [*cuts, len(order)], strict=True):
        store.apply(order[start:end])
    found = store.by_number(last.kojin_bango)
    assert found is not None, "the 個人番号 index lost the resident"
    assert (found.juminhyo_code, found.status, found.municipality) == (
        NEW_CODE,
        "active",
        CHIYODA,
    )
    assert store.check() == []


def test_the_order_that_lost_the_resident(tmp_path: Path) -> None:
    """The reported order: the new code's municipality first, then the old one, then
    the one that changed the code."""
    ring = KeyRing()
    bundles, last = _resident_story(ring)
    store = _store(tmp_path / "s", ring)
    for i in (5, 0, 1, 2, 3, 4):
        store.apply([bundles[i]])
    found = store.by_number(last.kojin_bango)
    assert found is not None and found.juminhyo_code == NEW_CODE
    assert store.check() == []
