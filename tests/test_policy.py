"""The task catalogue and the policy: loading (typed errors naming the field and value),
the shipped Yamaguchi catalogue, and the allow/deny matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukisync.query.policy import (
    Basis,
    CatalogueError,
    Denial,
    Field,
    GrantError,
    Kind,
    PolicyError,
    load_catalogue,
    load_policy,
)
from querykit import CATALOGUE, POLICY, make_policy, write_policy

CONFIG = Path(__file__).resolve().parent.parent / "config"


def test_the_shipped_yamaguchi_catalogue_matches_the_seed() -> None:
    catalogue = load_catalogue(CONFIG / "tasks-yamaguchi.toml")
    beppyo5 = [t for t in catalogue.tasks if t.basis is Basis.BEPPYO5]
    ordinance = [t for t in catalogue.tasks if t.basis is Basis.ORDINANCE]
    assert len(beppyo5) == 19  # 別表第5: 19 of its 37 items in use (seed)
    assert len(ordinance) == 56 and len(catalogue.categories) == 16  # as the seed's table
    assert {t.name for t in beppyo5} >= {"旅券発給に関する事務", "建設業の許可に関する事務"}
    assert catalogue.category("J01") is not None
    assert [t.code for t in ordinance if t.category == "J08"] == [f"J08-{i}" for i in range(1, 10)]
    # 都道府県知事保存本人確認情報 excludes 個人番号: no task of a prefecture sees it.
    assert all(Field.KOJIN_BANGO not in t.fields for t in catalogue.tasks)
    assert all(Field.STATUS in t.fields for t in catalogue.tasks)
    assert all(t.enacted is not None for t in ordinance)


def test_the_example_policy_loads_against_the_catalogue() -> None:
    policy = load_policy(CONFIG / "policy.example.toml")
    assert policy.retention_years == 5
    assert policy.decide("yamaguchi-ryoken", "B5-11", Kind.SEARCH).allowed
    assert not policy.decide("yamaguchi-ryoken", "J01-1", Kind.SEARCH).allowed


D = Denial
MATRIX = [
    # requester, task, kind, fields, expected (None: allowed)
    ("agency-a", "T-FULL", Kind.CODE, None, None),
    ("agency-a", "T-FULL", Kind.SEARCH, None, None),
    ("agency-a", "T-FULL", Kind.CONFIRM, None, None),
    ("agency-a", "T-FULL", Kind.KOJIN_BANGO, None, D.FIELD_NOT_ALLOWED),  # not 番号法
    ("agency-a", "T-FULL", Kind.CODE, ["name", "address"], None),
    ("agency-a", "T-FULL", Kind.CODE, ["kojin_bango"], D.FIELD_NOT_ALLOWED),
    ("agency-a", "T-FULL", Kind.CODE, ["shoe_size"], D.FIELD_NOT_ALLOWED),
    ("agency-a", "T-ADDR", Kind.CODE, ["address"], None),
    ("agency-a", "T-ADDR", Kind.CODE, ["birth_date"], D.FIELD_NOT_ALLOWED),
    ("agency-a", "T-NOSTATUS", Kind.CONFIRM, None, D.FIELD_NOT_ALLOWED),  # confirm answers status
    ("agency-a", "T-NOSTATUS", Kind.SEARCH, None, None),
    ("agency-a", "T-OFF", Kind.CODE, None, D.TASK_NOT_IN_USE),
    ("agency-a", "T-CODEONLY", Kind.CODE, None, None),
    ("agency-a", "T-CODEONLY", Kind.SEARCH, None, D.KIND_NOT_ALLOWED),
    ("agency-a", "T-NUM", Kind.KOJIN_BANGO, None, D.NOT_GRANTED),
    ("agency-a", "NO-SUCH", Kind.CODE, None, D.UNKNOWN_TASK),
    ("agency-n", "T-NUM", Kind.KOJIN_BANGO, None, None),
    ("agency-n", "T-NUM", Kind.KOJIN_BANGO, ["kojin_bango", "name"], None),
    ("agency-n", "T-FULL", Kind.CODE, None, D.NOT_GRANTED),
    ("nobody", "T-FULL", Kind.CODE, None, D.UNKNOWN_REQUESTER),
    ("", "T-FULL", Kind.CODE, None, D.UNKNOWN_REQUESTER),
]


@pytest.mark.parametrize(("requester", "task", "kind", "fields", "expected"), MATRIX)
def test_allow_deny_matrix(
    tmp_path: Path,
    requester: str,
    task: str,
    kind: Kind,
    fields: list[str] | None,
    expected: Denial | None,
) -> None:
    decision = make_policy(tmp_path).decide(requester, task, kind, fields)
    if expected is None:
        assert decision.allowed, decision.reason
        assert decision.fields == (
            frozenset(Field(f) for f in fields) if fields else decision.task.fields  # type: ignore[union-attr]
        )
    else:
        assert not decision.allowed
        assert decision.reason.startswith(f"{expected.value}: "), decision.reason
        assert decision.fields == frozenset()


def test_reasons_name_what_is_at_fault(tmp_path: Path) -> None:
    policy = make_policy(tmp_path)
    assert "'nobody'" in policy.decide("nobody", "T-FULL", Kind.CODE).reason
    assert "T-NUM" in policy.decide("agency-a", "T-NUM", Kind.CODE).reason
    assert "'agency-a'" in policy.decide("agency-a", "T-NUM", Kind.CODE).reason
    assert "birth_date" in policy.decide("agency-a", "T-ADDR", Kind.CODE, ["birth_date"]).reason
    assert "個人番号" in policy.decide("agency-a", "T-FULL", Kind.KOJIN_BANGO).reason


def test_batch_limit_per_requester(tmp_path: Path) -> None:
    policy = make_policy(tmp_path)
    assert policy.decide("small", "T-FULL", Kind.CONFIRM, items=10).allowed
    refused = policy.decide("small", "T-FULL", Kind.CONFIRM, items=11)
    assert refused.reason.startswith("batch_too_large: 11 codes exceed the limit of 10")


@pytest.mark.parametrize(
    ("catalogue", "policy", "error", "where", "says"),
    [
        (CATALOGUE + "\nfoo = 1\n", POLICY, CatalogueError, "tasks[5]", "unknown field `foo`"),
        (
            CATALOGUE.replace('fields = ["name", "address"]', 'fields = ["name", "shoe_size"]'),
            POLICY,
            CatalogueError,
            "tasks[3].fields[1]",
            "Invalid enum value 'shoe_size'",
        ),
        (
            CATALOGUE.replace('"juminhyo_code", "name", "address", "status"]', '"kojin_bango"]'),
            POLICY,
            CatalogueError,
            "tasks[1] (T-ADDR).fields",
            "only for tasks under the My Number Act",
        ),
        (
            CATALOGUE.replace('code = "T-NUM"', 'code = "T-FULL"'),
            POLICY,
            CatalogueError,
            "tasks[2] (T-FULL).code",
            "listed twice",
        ),
        (
            CATALOGUE.replace('category = "C1"', 'category = "C9"'),
            POLICY,
            CatalogueError,
            "tasks[1] (T-ADDR).category",
            "unknown category 'C9'",
        ),
        (
            CATALOGUE,
            POLICY.replace('tasks = ["T-NUM"]', 'tasks = ["T-NUM", "T-GONE"]'),
            GrantError,
            "requesters[1].tasks[1]",
            "unknown task 'T-GONE'",
        ),
        (
            CATALOGUE,
            POLICY.replace('id = "small"', 'id = "agency-a"'),
            GrantError,
            "requesters[2].id",
            "listed twice",
        ),
        (
            CATALOGUE,
            POLICY.replace("denials = 3", "denials = 0"),
            GrantError,
            "anomalies.denials",
            ">= 1",
        ),
        (CATALOGUE, POLICY + "\n[oops\n", GrantError, "", "not valid TOML"),
    ],
)
def test_bad_files_raise_typed_errors_naming_field_and_value(
    tmp_path: Path,
    catalogue: str,
    policy: str,
    error: type[PolicyError],
    where: str,
    says: str,
) -> None:
    path = write_policy(tmp_path, catalogue, policy)
    with pytest.raises(error) as info:
        load_policy(path)
    assert info.value.where == where, str(info.value)
    assert says in info.value.message, str(info.value)
    assert info.value.path.endswith(".toml")


def test_missing_catalogue_is_named(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    (tmp_path / "catalogue.toml").unlink()
    with pytest.raises(CatalogueError, match=r"catalogue\.toml: no such file"):
        load_policy(path)


# --- enactment (issue 11, item 8) ----------------------------------------------------------


@given(days=st.integers(min_value=-5000, max_value=5000))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_task_is_refused_before_its_ordinance_was_enacted(tmp_path: Path, days: int) -> None:
    import datetime as dt

    from jukisync.query.policy import Denial, Kind

    policy = make_policy(tmp_path / "p")
    task = policy.task("T-ADDR")
    assert task is not None and task.enacted == dt.date(2020, 4, 1)
    on = task.enacted + dt.timedelta(days=days)
    decision = policy.decide("agency-a", "T-ADDR", Kind.CODE, on=on)
    assert decision.allowed == (days >= 0), decision
    if days < 0:
        assert decision.reason.startswith(Denial.NOT_YET_ENACTED.value)
        assert "2020-04-01" in decision.reason
    # a task without an enactment date exists whenever
    assert policy.decide("agency-a", "T-FULL", Kind.CODE, on=on).allowed


def test_the_shipped_catalogue_dates_j14_1_from_2014() -> None:
    import datetime as dt

    from jukisync.query.policy import load_catalogue

    config = Path(__file__).resolve().parent.parent / "config"
    task = load_catalogue(config / "tasks-yamaguchi.toml").task("J14-1")
    assert task is not None and task.enacted == dt.date(2014, 4, 1)


@pytest.mark.parametrize(
    ("file", "key", "typo"),
    [
        ("policy", 'tasks = ["T-NUM"]', "taks"),
        ("policy", "denials = 3", "denails"),
        ("policy", 'catalogue = "catalogue.toml"', "catalog"),
        ("catalogue", 'provision = "番号法第9条"', "provisoin"),
        ("catalogue", "enacted = 2020-04-01", "enactd"),
        ("catalogue", 'authority = "テスト県"', "authorty"),
    ],
)
def test_an_unknown_policy_or_catalogue_key_suggests_the_meant_one(
    tmp_path: Path, file: str, key: str, typo: str
) -> None:
    from jukisync.query.policy import PolicyError

    name, _, value = key.partition(" = ")
    catalogue, policy = CATALOGUE, POLICY
    if file == "policy":
        assert key in policy
        policy = policy.replace(key, f"{typo} = {value}", 1)
    else:
        assert key in catalogue
        catalogue = catalogue.replace(key, f"{typo} = {value}", 1)
    with pytest.raises(PolicyError) as exc:
        make_policy_from(tmp_path, catalogue, policy)
    assert f"unknown field `{typo}` (did you mean `{name}`?)" in str(exc.value)


def make_policy_from(directory: Path, catalogue: str, policy: str) -> object:
    from jukisync.query.policy import load_policy

    return load_policy(write_policy(directory, catalogue, policy))
