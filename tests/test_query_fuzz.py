"""Whatever bytes a request holds, the query service answers it and logs it (issue 11,
item 7): arbitrary bytes, invalid UTF-8, nesting deeper than the decoder recurses,
structurally valid MessagePack of the wrong shape."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync import Store
from jukisync.query.audit import to_micros
from jukisync.query.service import (
    ByCode,
    Denied,
    Found,
    QueryService,
    RequestError,
    decode_request,
    decode_response,
    encode,
)
from netkit import YAMAGUCHI_CITY
from querykit import Registry, code, make_policy, person

DAYTIME = to_micros(dt.datetime(2026, 6, 1, 12, 0))  # after every test task's enactment
_FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def service(tmp_path: Path) -> tuple[QueryService, Store]:
    reg = Registry(tmp_path)
    store = reg.open()
    reg.apply(store, [person(YAMAGUCHI_CITY, 1)])
    return QueryService(store, make_policy(tmp_path / "policy"), clock=lambda: DAYTIME), store


def _answered_and_logged(service: QueryService, store: Store, data: bytes) -> None:
    before = store.audit_head()[1]
    answer = decode_response(service.handle("agency-a", data))
    after = store.audit_head()[1]
    assert after == before + 1, "no audit entry for the request"
    assert answer.audit_id == after


def _nested(depth: int, container: str) -> bytes:
    # {"a": {"a": ... nil}} or [[... nil]], `depth` levels.
    opener = b"\x81\xa1a" if container == "map" else b"\x91"
    return opener * depth + b"\xc0"


# MessagePack values of any shape: the decoder sees the right syntax, the wrong types.
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_requestish = st.fixed_dictionaries(
    {"kind": st.sampled_from(["code", "kojin_bango", "search", "confirm", "other"])},
    optional={
        "task": _values,
        "code": _values,
        "kojin_bango": _values,
        "name": _values,
        "birth_date": _values,
        "sex": _values,
        "codes": _values,
        "fields": _values,
        "ref": _values,
        "limit": _values,
        "requester": _values,
    },
)


@_FUZZ
@given(data=st.binary(max_size=256))
def test_any_bytes_are_answered_and_logged(
    service: tuple[QueryService, Store], data: bytes
) -> None:
    _answered_and_logged(*service, data)


@_FUZZ
@given(request=_requestish)
def test_any_shape_is_answered_and_logged(
    service: tuple[QueryService, Store], request: dict[str, object]
) -> None:
    _answered_and_logged(*service, msgspec.msgpack.encode(request))


@_FUZZ
@given(
    depth=st.integers(min_value=1, max_value=5000),
    container=st.sampled_from(["map", "array"]),
    prefix=st.sampled_from([b"", b"\x82\xa4kind\xa4code\xa4task"]),
)
def test_deep_nesting_is_answered_and_logged(
    service: tuple[QueryService, Store], depth: int, container: str, prefix: bytes
) -> None:
    _answered_and_logged(*service, prefix + _nested(depth, container))


@_FUZZ
@given(text=st.binary(min_size=1, max_size=16).filter(lambda b: not _is_utf8(b)))
def test_invalid_utf8_anywhere_is_answered_and_logged(
    service: tuple[QueryService, Store], text: bytes
) -> None:
    # a str8 header with bytes that are not UTF-8, as the kind and as the task
    raw = b"\xd9" + bytes([len(text)]) + text
    for data in (b"\x81\xa4kind" + raw, b"\x82\xa4kind\xa4code\xa4task" + raw):
        _answered_and_logged(*service, data)
        with pytest.raises(RequestError):
            decode_request(data)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_issues_eight_bytes_are_refused_as_invalid(
    service: tuple[QueryService, Store],
) -> None:
    svc, store = service
    answer = decode_response(svc.handle("agency-a", b"\x81\xa4kind\xa1\xff"))
    assert isinstance(answer, Denied) and answer.query == "invalid"
    assert answer.reason.startswith("invalid_request:")
    entry = store.audit_entries()[-1]
    assert entry.requester == "agency-a" and not entry.allowed


def test_a_good_request_after_bad_ones_is_answered(service: tuple[QueryService, Store]) -> None:
    svc, _ = service
    for data in (b"\xc1", _nested(3000, "map"), b"\x81\xa4kind\xa1\xff"):
        assert isinstance(decode_response(svc.handle("agency-a", data)), Denied)
    good = encode(ByCode(task="T-ADDR", code=code(YAMAGUCHI_CITY, 1)))
    assert isinstance(decode_response(svc.handle("agency-a", good)), Found)
