"""How often each kind of change happens (`ChangeMix`) and when in the year moves peak."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Final

from jukisync.wire.messages import ChangeReason


@dataclass(frozen=True, slots=True)
class ChangeMix:
    """How often each kind of change happens nationally per year, in millions.

    Only the proportions matter: the generator draws each event with probability
    proportional to these. A domestic move is one event and two updates (転出 and
    転入). Figures marked domain.md are from there; the rest are assumptions.
    """

    # domain.md: ~4.8 M 転入 a year (2023), each the second half of a move whose
    # first half is a 転出 (domain.md's 4.9 M 転出 also counts moves abroad).
    domestic_moves: float = 4.8
    births: float = 0.73  # domain.md (2023)
    deaths: float = 1.58  # domain.md (2023)
    # Assumption: foreign residents grow by ~0.25 M a year, so more arrive than leave.
    moves_from_abroad: float = 0.5
    moves_abroad: float = 0.25
    # Assumption: moves within a municipality about as common as between them.
    address_changes: float = 4.0
    # ~0.47 M marriages a year, most of them changing one spouse's surname, which the
    # register applies by authority from the family-register notification (職権修正).
    corrections_by_authority: float = 0.55
    error_corrections: float = 0.05  # assumption
    kojin_bango_changes: float = 0.01  # assumption: replaced on request after a leak
    juminhyo_code_changes: float = 0.005  # assumption: changed on request
    former_surname_alias: float = 0.1  # assumption: 旧氏/通称 entries and removals
    entries_by_authority: float = 0.02  # assumption
    removals_by_authority: float = 0.1  # assumption: whereabouts unknown (職権消除)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"ChangeMix.{f.name} must be a finite number >= 0: {value}")

    def update_shares(self) -> dict[ChangeReason, float]:
        """The expected share of each 異動事由 among the updates of a long stream."""
        counts = {
            ChangeReason.MOVE_OUT: self.domestic_moves,
            ChangeReason.MOVE_IN: self.domestic_moves,
            ChangeReason.BIRTH: self.births,
            ChangeReason.DEATH: self.deaths,
            ChangeReason.MOVE_IN_FROM_ABROAD: self.moves_from_abroad,
            ChangeReason.MOVE_OUT_ABROAD: self.moves_abroad,
            ChangeReason.ADDRESS_CHANGE: self.address_changes,
            ChangeReason.CORRECTION_BY_AUTHORITY: self.corrections_by_authority,
            ChangeReason.ERROR_CORRECTION: self.error_corrections,
            ChangeReason.KOJIN_BANGO_CHANGE: self.kojin_bango_changes,
            ChangeReason.JUMINHYO_CODE_CHANGE: self.juminhyo_code_changes,
            ChangeReason.FORMER_SURNAME_ALIAS: self.former_surname_alias,
            ChangeReason.ENTRY_BY_AUTHORITY: self.entries_by_authority,
            ChangeReason.REMOVAL_BY_AUTHORITY: self.removals_by_authority,
        }
        total = sum(counts.values())
        if total <= 0:
            raise ValueError("ChangeMix has no changes at all")
        return {reason: n / total for reason, n in counts.items()}

    def _events(self) -> list[tuple[ChangeReason, float]]:
        # One entry per kind of event; a domestic move is keyed by its MOVE_OUT.
        return [
            (ChangeReason.MOVE_OUT, self.domestic_moves),
            (ChangeReason.BIRTH, self.births),
            (ChangeReason.DEATH, self.deaths),
            (ChangeReason.MOVE_IN_FROM_ABROAD, self.moves_from_abroad),
            (ChangeReason.MOVE_OUT_ABROAD, self.moves_abroad),
            (ChangeReason.ADDRESS_CHANGE, self.address_changes),
            (ChangeReason.CORRECTION_BY_AUTHORITY, self.corrections_by_authority),
            (ChangeReason.ERROR_CORRECTION, self.error_corrections),
            (ChangeReason.KOJIN_BANGO_CHANGE, self.kojin_bango_changes),
            (ChangeReason.JUMINHYO_CODE_CHANGE, self.juminhyo_code_changes),
            (ChangeReason.FORMER_SURNAME_ALIAS, self.former_surname_alias),
            (ChangeReason.ENTRY_BY_AUTHORITY, self.entries_by_authority),
            (ChangeReason.REMOVAL_BY_AUTHORITY, self.removals_by_authority),
        ]


DEFAULT_MIX: Final = ChangeMix()

# Relative frequency of moves by month (January first): the moving season peaks in
# March-April, April about 1.6x the monthly average (domain.md). Applies to every kind
# of move (転出/転入, 転居, abroad); births, deaths and corrections are flat.
MOVING_SEASON: Final = (0.85, 0.9, 1.45, 1.6, 0.95, 0.85, 0.85, 0.85, 0.85, 0.9, 0.85, 0.9)

SEASONAL: Final = frozenset(
    {
        ChangeReason.MOVE_OUT,
        ChangeReason.MOVE_IN_FROM_ABROAD,
        ChangeReason.MOVE_OUT_ABROAD,
        ChangeReason.ADDRESS_CHANGE,
    }
)
REMOVALS: Final = frozenset(
    {ChangeReason.DEATH, ChangeReason.MOVE_OUT_ABROAD, ChangeReason.REMOVAL_BY_AUTHORITY}
)
NEWCOMERS: Final = frozenset(
    {ChangeReason.BIRTH, ChangeReason.MOVE_IN_FROM_ABROAD, ChangeReason.ENTRY_BY_AUTHORITY}
)
