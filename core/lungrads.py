"""A Lung-RADS category suggested from the nodules a radiologist accepted or added (pure; no I/O).

Source: American College of Radiology, "Lung-RADS v2022" assessment categories (released
November 2022), baseline screening CT, solid nodules::

    category  solid nodule at baseline (mean diameter)
    1         no lung nodules (or nodules with benign calcification)
    2         < 6 mm
    3         >= 6 mm and < 8 mm
    4A        >= 8 mm and < 15 mm
    4B        >= 15 mm

Lung-RADS measures a nodule by its mean diameter (mean of the long and short axis) rounded to one
decimal place (ACR Lung-RADS v1.1/v2022 notes on measurement) before it is compared with the
thresholds: 5.95 mm rounds to 6.0 mm and is category 3.

This is a SUGGESTION for the radiologist, who records their own category (``db`` table
``lungrads_reads``): it ignores growth and new nodules (it treats every scan as a baseline), the
part-solid and ground-glass rules, calcification patterns, perifissural nodules, airway nodules,
the 4X features (spiculation, lymphadenopathy ...) and the S and C modifiers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from core.domain import LungRads, NoduleDecision, NoduleType

__all__ = ["CAVEAT", "SOLID_THRESHOLDS_MM", "LungRadsInputError", "LungRadsSuggestion", "ReadNodule",
           "mean_diameter_for_lungrads", "suggest_lungrads"]

#: (lower bound in mm, inclusive; category) for a solid nodule at baseline, ACR Lung-RADS v2022.
#: A nodule takes the category of the highest bound it reaches; under 6 mm it is category 2.
SOLID_THRESHOLDS_MM: tuple[tuple[float, LungRads], ...] = (
    (0.0, LungRads.CAT_2),
    (6.0, LungRads.CAT_3),
    (8.0, LungRads.CAT_4A),
    (15.0, LungRads.CAT_4B),
)

#: The caveat every suggestion carries (shown beside it on the page).
CAVEAT = ("Suggestion only (ACR Lung-RADS v2022, baseline, solid nodules): it ignores growth, nodule type "
          "other than solid, and other features; the radiologist's own category is the one recorded.")


class LungRadsInputError(ValueError):
    """A nodule passed to :func:`suggest_lungrads` has a malformed decision, type or diameter."""


@dataclass(frozen=True)
class ReadNodule:
    """One nodule as the radiologist's current read has it.

    Attributes:
        decision: a ``core.config.NoduleDecision`` value: "accept" (an AI finding the reader
            accepted), "add" (a nodule the reader added); "reject", "withdraw" and None (an AI
            finding not decided yet, ``db.repository.NoduleState.decision``) are ignored.
        diameter_mm: the nodule's mean diameter in mm: the reader's corrected diameter when there
            is one, else the AI's (``Nodule.diameter_mm``); for an added nodule, the reader's.
        nodule_type: a ``core.config.NoduleType`` value, or None when the reader gave none.
    """

    decision: NoduleDecision | str | None
    diameter_mm: float
    nodule_type: NoduleType | str | None = None


@dataclass(frozen=True)
class LungRadsSuggestion:
    """A suggested category, the one-line reason, and :data:`CAVEAT`.

    Attributes:
        category: the suggested ``LungRads`` category (1, 2, 3, 4A or 4B).
        explanation: one line, e.g. "largest accepted solid nodule 7.2 mm: 6 to under 8 mm".
        caveat: :data:`CAVEAT`.
        diameter_mm: the rounded mean diameter (mm, one decimal) the category comes from; None
            for category 1.
        n_counted: how many accepted or added solid nodules were considered.
    """

    category: LungRads
    explanation: str
    caveat: str
    diameter_mm: float | None
    n_counted: int


def mean_diameter_for_lungrads(diameter_mm: float) -> float:
    """The diameter rounded half up to one decimal place, as Lung-RADS compares it (ACR v2022).

    Rounding goes through the decimal text of the float, so 5.95 gives 6.0 (binary rounding of
    the float 5.95 = 5.9499999... would give 5.9).

    Args:
        diameter_mm: mean diameter in mm, finite and > 0.

    Returns:
        The rounded diameter in mm (float).

    Raises:
        LungRadsInputError: not a finite positive number.
    """
    try:
        d = float(diameter_mm)
    except (TypeError, ValueError):
        raise LungRadsInputError(f"A nodule diameter must be a number of mm, got {diameter_mm!r}.") from None
    if isinstance(diameter_mm, bool) or not math.isfinite(d) or d <= 0:
        raise LungRadsInputError(f"A nodule diameter must be a finite number of mm above 0, got {diameter_mm!r}.")
    return float(Decimal(repr(d)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _solid_category(diameter_mm: float) -> LungRads:
    category = SOLID_THRESHOLDS_MM[0][1]
    for lower, cat in SOLID_THRESHOLDS_MM:
        if diameter_mm >= lower:
            category = cat
    return category


_RANGE_TEXT = {LungRads.CAT_2: "under 6 mm", LungRads.CAT_3: "6 to under 8 mm",
               LungRads.CAT_4A: "8 to under 15 mm", LungRads.CAT_4B: "15 mm or more"}


def suggest_lungrads(nodules: Iterable[ReadNodule], *, untyped_is_solid: bool = True) -> LungRadsSuggestion:
    """Suggest a Lung-RADS v2022 category from the largest accepted or added solid nodule.

    Only nodules with decision "accept" or "add" count; of those only solid ones (type "solid",
    and, with ``untyped_is_solid``, those without a type: the page's default, and the nodule
    detector was trained on mostly solid LIDC nodules). Part-solid, ground-glass and calcified
    nodules are ignored (they follow other rules, or are benign: category 1). The largest
    counted nodule's diameter, rounded to one decimal (:func:`mean_diameter_for_lungrads`),
    gives the category by :data:`SOLID_THRESHOLDS_MM`; with none counted the category is 1.

    Args:
        nodules: the reader's current nodules (see :class:`ReadNodule`), in any order.
        untyped_is_solid: count nodules without a type as solid (default True).

    Returns:
        :class:`LungRadsSuggestion` with the category, a one-line explanation and the caveat.

    Raises:
        LungRadsInputError: a nodule has an unknown decision or type, or a counted nodule's
            diameter is not a finite number above 0.
    """
    counted: list[float] = []
    untyped = 0
    for n in nodules:
        if n.decision is None:
            continue
        try:
            decision = NoduleDecision(str(n.decision))
            kind = None if n.nodule_type in (None, "") else NoduleType(str(n.nodule_type))
        except ValueError as exc:
            raise LungRadsInputError(f"Unknown nodule decision or type in {n!r}: {exc}.") from None
        if decision not in (NoduleDecision.ACCEPT, NoduleDecision.ADD):
            continue
        if kind is None and not untyped_is_solid:
            continue
        if kind not in (None, NoduleType.SOLID):
            continue
        counted.append(mean_diameter_for_lungrads(n.diameter_mm))
        untyped += kind is None
    if not counted:
        return LungRadsSuggestion(LungRads.CAT_1, "no accepted solid nodule: category 1 (negative)", CAVEAT,
                                  None, 0)
    largest = max(counted)
    category = _solid_category(largest)
    note = f" ({untyped} without a type counted as solid)" if untyped else ""
    explanation = (f"largest accepted solid nodule {largest:.1f} mm of {len(counted)}{note}: "
                   f"{_RANGE_TEXT[category]}, category {category.value}")
    return LungRadsSuggestion(category, explanation, CAVEAT, largest, len(counted))
