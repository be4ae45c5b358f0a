"""Purpose-bound use of the records (DESIGN.md §6, domain.md): the task catalogue
(事務) and the policy saying which requester may use which task.

A body may use the identity records only for a task the law lists (住基法 別表第1–第5),
a task a prefecture's ordinance adds (条例事務), with the person's consent, or for
statistics, and each task may see only the fields it needs; 個人番号 only for tasks
under the My Number Act (番号法). Both files are TOML decoded into msgspec Structs
that reject unknown keys:

- the catalogue (e.g. ``config/tasks-yamaguchi.toml``): categories and tasks;
- the policy (e.g. ``config/policy.example.toml``): which catalogue, the requesters
  and their granted tasks, audit retention and anomaly thresholds.

`Policy.decide` answers one question, "may this requester do this kind of query for
this task, seeing these fields?", with a `Decision` whose reason names the requester,
task or field at fault. A refusal is not an exception: it is an answer, logged like
any other (jukisync.query).
"""

from __future__ import annotations

import datetime as dt
import enum
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Final, TypeVar

import msgspec

from jukisync.config import errors as configerrors

__all__ = [
    "ALL_KINDS",
    "Auditor",
    "Basis",
    "Catalogue",
    "CatalogueError",
    "Category",
    "Decision",
    "Denial",
    "Field",
    "GrantError",
    "Kind",
    "Policy",
    "PolicyError",
    "PolicyFile",
    "Requester",
    "Retention",
    "Task",
    "Thresholds",
    "load_catalogue",
    "load_policy",
]


class PolicyError(Exception):
    """A catalogue or policy that cannot be used: names the file, the field and value."""

    def __init__(self, path: Path | str, where: str, message: str) -> None:
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}")
        self.path = str(path)
        self.where = where
        self.message = message


class CatalogueError(PolicyError):
    """The task catalogue is invalid (a duplicate code, a field a task may not see)."""


class GrantError(PolicyError):
    """The policy grants something that does not exist (an unknown task, requester twice)."""


class Basis(enum.StrEnum):
    """Why a task may use the records (住基法 第30条の15 and its 別表)."""

    BEPPYO1 = "beppyo1"  # 別表第1: national agencies
    BEPPYO2 = "beppyo2"
    BEPPYO3 = "beppyo3"
    BEPPYO4 = "beppyo4"
    BEPPYO5 = "beppyo5"  # 別表第5: the prefecture's own statutory tasks (第1項第1号)
    ORDINANCE = "ordinance"  # 条例で定める事務 (第1項第2号)
    CONSENT = "consent"  # 本人が同意した事務 (第1項第3号)
    STATISTICS = "statistics"  # 統計資料の作成 (第1項第4号)

    @property
    def label(self) -> str:
        return _BASIS_LABELS[self]


_BASIS_LABELS: Final = {
    Basis.BEPPYO1: "別表第1",
    Basis.BEPPYO2: "別表第2",
    Basis.BEPPYO3: "別表第3",
    Basis.BEPPYO4: "別表第4",
    Basis.BEPPYO5: "別表第5",
    Basis.ORDINANCE: "条例",
    Basis.CONSENT: "本人同意",
    Basis.STATISTICS: "統計",
}


class Field(enum.StrEnum):
    """What a task may see of a record. `status`, `reason` and `changed_on` are the
    異動 information (whether the person still lives there, moved out or died, and
    when); a batch confirmation answers with them."""

    JUMINHYO_CODE = "juminhyo_code"
    KOJIN_BANGO = "kojin_bango"
    NAME = "name"
    NAME_KANA = "name_kana"
    FORMER_SURNAME = "former_surname"
    ALIAS = "alias"
    BIRTH_DATE = "birth_date"
    SEX = "sex"
    ADDRESS = "address"
    MUNICIPALITY = "municipality"
    STATUS = "status"
    REASON = "reason"
    CHANGED_ON = "changed_on"


class Kind(enum.StrEnum):
    """Query kinds (DESIGN.md §6); also the `kind` of their audit entries."""

    CODE = "code"  # by 住民票コード
    KOJIN_BANGO = "kojin_bango"  # by 個人番号
    SEARCH = "search"  # by the four basic items
    CONFIRM = "confirm"  # batch confirmation (一括提供)


ALL_KINDS: Final = frozenset(Kind)

TaskCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
RequesterId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Positive = Annotated[int, msgspec.Meta(gt=0)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Category(_Section, frozen=True, kw_only=True):
    """A group of ordinance tasks (the seed's 区分), e.g. 地方税法に関する事務."""

    code: TaskCode
    name: str


class Task(_Section, frozen=True, kw_only=True):
    """One task (事務). `fields` are what its answers may contain; `kinds` the queries
    it may use. `category` (ordinance tasks) names a `Category`."""

    code: TaskCode
    name: str
    basis: Basis
    provision: str  # the legal provision, e.g. 住民基本台帳法第30条の15第1項第1号・別表第5
    fields: frozenset[Field]
    law: str | None = None  # the law the task itself is under (消防法, 旅券法, ...)
    category: TaskCode | None = None
    enacted: dt.date | None = None  # ordinance tasks: when the ordinance added it
    my_number_act: bool = False  # also a task under 番号法: may see 個人番号
    kinds: frozenset[Kind] = ALL_KINDS
    in_use: bool = True


class Catalogue(_Section, frozen=True, kw_only=True):
    authority: str  # whose catalogue: 山口県
    as_of: dt.date
    categories: list[Category] = []
    tasks: list[Task]

    def task(self, code: str) -> Task | None:
        return self._by_code().get(code)

    def category(self, code: str | None) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def _by_code(self) -> Mapping[str, Task]:
        # A frozen Struct cannot cache an attribute; the catalogue is small.
        return {t.code: t for t in self.tasks}


class Requester(_Section, frozen=True, kw_only=True):
    """A body allowed to query: its id is the broker's validated `user_id` over AMQP,
    the `--requester` flag in the CLI."""

    id: RequesterId
    name: str
    tasks: list[TaskCode]
    max_batch: Positive = 1_000_000


class Thresholds(_Section, frozen=True, kw_only=True):
    """When the audit flags use as anomalous (jukisync.audit.anomalies); Japan time."""

    night_start: dt.time = dt.time(22, 0)
    night_end: dt.time = dt.time(6, 0)
    mass_window_minutes: Positive = 60
    mass_queries: Positive = 500  # more single queries than this in the window
    denial_window_minutes: Positive = 60
    denials: Positive = 5  # this many refusals in the window


class Auditor(_Section, frozen=True, kw_only=True):
    """Who may read residents' provision histories (`audit disclose`) and purge the
    log (`audit purge`): the `--requester` of those commands must be one of them."""

    id: RequesterId
    name: str


class Retention(_Section, frozen=True, kw_only=True):
    years: Positive = 5  # provision records are kept 5 years (domain.md)


class PolicyFile(_Section, frozen=True, kw_only=True):
    catalogue: str  # path, relative to the policy file
    requesters: list[Requester]
    retention: Retention = Retention()
    anomalies: Thresholds = Thresholds()
    auditors: list[Auditor] = []


class Denial(enum.StrEnum):
    """Why a query was refused (the first word of its logged reason)."""

    UNKNOWN_REQUESTER = "unknown_requester"
    UNKNOWN_TASK = "unknown_task"
    TASK_NOT_IN_USE = "task_not_in_use"
    NOT_YET_ENACTED = "not_yet_enacted"
    NOT_GRANTED = "not_granted"
    KIND_NOT_ALLOWED = "kind_not_allowed"
    FIELD_NOT_ALLOWED = "field_not_allowed"
    BATCH_TOO_LARGE = "batch_too_large"
    INVALID_REQUEST = "invalid_request"
    NOT_AN_AUDITOR = "not_an_auditor"


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    reason: str = ""  # "<denial>: <explanation>" when refused
    fields: frozenset[Field] = frozenset()  # what the answer may contain
    task: Task | None = None

    @classmethod
    def deny(cls, denial: Denial, why: str, task: Task | None = None) -> Decision:
        return cls(False, f"{denial.value}: {why}", task=task)


# What each kind needs to be usable at all: a batch confirmation answers with the
# status, a lookup by 個人番号 uses the number.
_KIND_NEEDS: Final = {Kind.CONFIRM: Field.STATUS, Kind.KOJIN_BANGO: Field.KOJIN_BANGO}


class Policy:
    """A policy file with its catalogue, checked against each other."""

    def __init__(self, file: PolicyFile, catalogue: Catalogue, *, source: str = "<policy>") -> None:
        self.file = file
        self.catalogue = catalogue
        self.source = source
        self._tasks = {t.code: t for t in catalogue.tasks}
        self._requesters: dict[str, Requester] = {}
        for i, r in enumerate(file.requesters):
            where = f"requesters[{i}]"
            if r.id in self._requesters:
                raise GrantError(source, f"{where}.id", f"requester {r.id!r} is listed twice")
            for j, code in enumerate(r.tasks):
                if code not in self._tasks:
                    raise GrantError(
                        source,
                        f"{where}.tasks[{j}]",
                        f"unknown task {code!r} (not in the catalogue)",
                    )
            self._requesters[r.id] = r
        self._auditors: dict[str, Auditor] = {}
        for i, a in enumerate(file.auditors):
            if a.id in self._auditors:
                raise GrantError(source, f"auditors[{i}].id", f"auditor {a.id!r} is listed twice")
            self._auditors[a.id] = a

    @property
    def thresholds(self) -> Thresholds:
        return self.file.anomalies

    @property
    def retention_years(self) -> int:
        return self.file.retention.years

    def requester(self, requester_id: str) -> Requester | None:
        return self._requesters.get(requester_id)

    def task(self, code: str) -> Task | None:
        return self._tasks.get(code)

    def auditor(self, auditor_id: str) -> Auditor | None:
        """The auditor `auditor_id`, or None: then it may not disclose nor purge."""
        return self._auditors.get(auditor_id)

    def decide(
        self,
        requester_id: str,
        task_code: str,
        kind: Kind,
        fields: Iterable[str] | None = None,
        *,
        items: int = 1,
        on: dt.date | None = None,
    ) -> Decision:
        """May `requester_id` run a `kind` query for `task_code`, seeing `fields` (all
        the task may see when None), about `items` subjects, on the day `on` (Japan
        time; a task cannot be used before its ordinance was enacted)? The query
        service always gives `on`; without it the date is not checked."""
        requester = self._requesters.get(requester_id)
        if requester is None:
            return Decision.deny(
                Denial.UNKNOWN_REQUESTER, f"requester {requester_id!r} is not in the policy"
            )
        task = self._tasks.get(task_code)
        if task is None:
            return Decision.deny(Denial.UNKNOWN_TASK, f"no task {task_code!r} in the catalogue")
        if task_code not in requester.tasks:
            return Decision.deny(
                Denial.NOT_GRANTED,
                f"task {task_code} ({task.name}) is not granted to requester {requester_id!r}",
                task,
            )
        if not task.in_use:
            return Decision.deny(Denial.TASK_NOT_IN_USE, f"task {task_code} is not in use", task)
        if on is not None and task.enacted is not None and on < task.enacted:
            return Decision.deny(
                Denial.NOT_YET_ENACTED,
                f"task {task_code} exists from {task.enacted.isoformat()} (enacted), "
                f"not on {on.isoformat()}",
                task,
            )
        if kind not in task.kinds:
            return Decision.deny(
                Denial.KIND_NOT_ALLOWED, f"task {task_code} may not use {kind.value} queries", task
            )
        needed = _KIND_NEEDS.get(kind)
        if needed is not None and needed not in task.fields:
            why = (
                f"task {task_code} may not use 個人番号 (not a task under the My Number Act)"
                if needed is Field.KOJIN_BANGO
                else f"task {task_code} may not see {needed.value}, which {kind.value} answers"
            )
            return Decision.deny(Denial.FIELD_NOT_ALLOWED, why, task)
        if items > requester.max_batch:
            return Decision.deny(
                Denial.BATCH_TOO_LARGE,
                f"{items:,} codes exceed the limit of {requester.max_batch:,} for {requester_id!r}",
                task,
            )
        if fields is None:
            return Decision(True, fields=task.fields, task=task)
        wanted: set[Field] = set()
        for name in fields:
            try:
                field = Field(name)
            except ValueError:
                return Decision.deny(Denial.FIELD_NOT_ALLOWED, f"no field {name!r}", task)
            if field not in task.fields:
                return Decision.deny(
                    Denial.FIELD_NOT_ALLOWED, f"task {task_code} may not see field {name}", task
                )
            wanted.add(field)
        return Decision(True, fields=frozenset(wanted), task=task)


_T = TypeVar("_T")


def _read(path: Path, into: type[_T], error: type[PolicyError]) -> _T:
    """A TOML file decoded into `into`; every problem an `error` naming file and field."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise error(path, "", "no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(path, "", f"not valid TOML: {exc}") from None
    try:
        return msgspec.convert(data, into)
    except msgspec.ValidationError as exc:
        raise error(path, *configerrors.explain(exc, data, into)) from None


def check_catalogue(catalogue: Catalogue, source: str = "<catalogue>") -> None:
    """The rules a catalogue must keep beyond its types."""
    categories = {c.code for c in catalogue.categories}
    if len(categories) != len(catalogue.categories):
        raise CatalogueError(source, "categories", "a category code is listed twice")
    seen: set[str] = set()
    for i, task in enumerate(catalogue.tasks):
        where = f"tasks[{i}] ({task.code})"
        if task.code in seen:
            raise CatalogueError(source, f"{where}.code", f"task {task.code!r} is listed twice")
        seen.add(task.code)
        if Field.KOJIN_BANGO in task.fields and not task.my_number_act:
            raise CatalogueError(
                source,
                f"{where}.fields",
                "kojin_bango (個人番号) only for tasks under the My Number Act (my_number_act)",
            )
        if (task.basis is Basis.ORDINANCE) != (task.category is not None):
            raise CatalogueError(
                source, f"{where}.category", "ordinance tasks, and only they, name a category"
            )
        if task.category is not None and task.category not in categories:
            raise CatalogueError(source, f"{where}.category", f"unknown category {task.category!r}")
        if not task.fields:
            raise CatalogueError(source, f"{where}.fields", "a task must see at least one field")


def load_catalogue(path: str | Path) -> Catalogue:
    path = Path(path)
    catalogue = _read(path, Catalogue, CatalogueError)
    check_catalogue(catalogue, str(path))
    return catalogue


def load_policy(path: str | Path) -> Policy:
    """A policy file and the catalogue it names (relative to the policy file)."""
    path = Path(path)
    file = _read(path, PolicyFile, GrantError)
    catalogue = load_catalogue(path.parent / file.catalogue)
    return Policy(file, catalogue, source=str(path))
