"""Power and sample size of the next MRMC study from a pilot's Obuchowski-Rockette variance components.

The method of Hillis, Obuchowski & Berbaum 2011 (Acad Radiol 18:129-142, eq. 10; also Hillis &
Schartz 2018, J Med Imaging 5:045503), as RJafroc's ``SsPowerGivenJK`` / ``SsSampleSizeKGivenJ``
(method "OR") implement it, for a pivotal study comparing two treatments with J readers and K
cases, each reader reading each case in both treatments:

* The pilot's components (:class:`core.stats.mrmc.VarianceComponents`) scale to K cases by
  K*/K, K* = the pilot's number of cases: Var, Cov1, Cov2, Cov3 are error (case) variances.
  Var(T:R) is clipped at 0, as RJafroc does.
* Random readers and random cases (RRRC): den = Var(T:R) + K*/K [Var - Cov1 + (J-1) max(Cov2 -
  Cov3, 0)]; ddf = den^2 (J-1) / {Var(T:R) + K*/K [Var - Cov1 - max(Cov2 - Cov3, 0)]}^2; the F
  statistic is non-central F(1, ddf) with non-centrality lambda = J d^2 / (2 den), d = the effect
  size (difference of reader-averaged FOMs); power = P(F > F_{1-alpha}(1, ddf)).
* Fixed readers (FRRC): den = K*/K [Var - Cov1 + (J-1) max(Cov2 - Cov3, 0)], non-central
  chi-square on 1 df (RJafroc's current code; Hillis et al. 2011 Table 2).
* Fixed cases (RRFC): den = Var(T:R) + K*/K [Var - Cov1 - max(Cov2 - Cov3, 0)], F(1, J-1).

Non-central F and chi-square are ``scipy.stats.ncf`` and ``scipy.stats.ncx2``; every function is
vectorised over readers and cases (numpy broadcasting). With more than two treatments in the pilot
the pooled components are used for one pairwise comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from core.stats.mrmc import MrmcError, MrmcResult, VarianceComponents

#: Analyses: random readers and cases (the default), fixed readers, fixed cases.
RRRC, FRRC, RRFC = "RRRC", "FRRC", "RRFC"
#: Default grid of the pilot report: 3-15 readers, 50-500 cases.
READERS_GRID: tuple[int, ...] = tuple(range(3, 16))
CASES_GRID: tuple[int, ...] = tuple(range(50, 501, 50))
#: Target power of the "smallest design" and the most cases searched (RJafroc searches to 2000).
TARGET_POWER = 0.8
MAX_CASES = 2000


def power(readers, cases, *, effect: float, components: VarianceComponents, alpha: float = 0.05,
          analysis: str = RRRC) -> np.ndarray:
    """Power of a two-treatment study with ``readers`` readers and ``cases`` cases.

    Args:
        readers, cases: int or int arrays (broadcast together), J >= 2 (RRRC, RRFC) or >= 1
            (FRRC), K >= 1.
        effect: the difference of reader-averaged FOMs to detect (its sign does not matter).
        components: the pilot's :class:`VarianceComponents` (``n_cases`` = K*).
        alpha: two-sided test level.
        analysis: :data:`RRRC` (default), :data:`FRRC` or :data:`RRFC`.

    Returns:
        float64 array of the broadcast shape: power in [0, 1]; NaN where the variance formula is
        not positive (degenerate pilot).

    Raises:
        MrmcError: unknown analysis, alpha outside (0, 1), fewer readers or cases than needed.
    """
    if analysis not in (RRRC, FRRC, RRFC):
        raise MrmcError(f"Unknown analysis {analysis!r}; use {RRRC}, {FRRC} or {RRFC}.")
    if not 0 < alpha < 1:
        raise MrmcError(f"alpha must lie between 0 and 1, got {alpha}.")
    j = np.asarray(readers, dtype=float)
    k = np.asarray(cases, dtype=float)
    if (k < 1).any() or (j < (1 if analysis == FRRC else 2)).any():
        raise MrmcError("Power needs at least 1 case and 2 readers (1 for fixed readers).")
    c = components
    var_tr = max(c.var_tr, 0.0)
    extra = max(c.cov2 - c.cov3, 0.0)
    scale = c.n_cases / k
    with np.errstate(divide="ignore", invalid="ignore"):
        if analysis == FRRC:
            den = scale * (c.var - c.cov1 + (j - 1) * extra)
            ncp = effect ** 2 * j / 2 / den
            out = stats.ncx2.sf(stats.chi2.isf(alpha, 1), 1, ncp)
        else:
            small = var_tr + scale * (c.var - c.cov1 - extra)
            if analysis == RRRC:
                den = var_tr + scale * (c.var - c.cov1 + (j - 1) * extra)
                ddf = den ** 2 * (j - 1) / small ** 2
            else:
                den = small
                ddf = j - 1
            ncp = effect ** 2 * j / 2 / den
            out = stats.ncf.sf(stats.f.isf(alpha, 1, ddf), 1, ddf, ncp)
    out = np.where((den > 0) & np.isfinite(ncp), out, np.nan)
    return np.asarray(out, dtype=float)


def cases_for_power(readers, *, effect: float, components: VarianceComponents, target: float = TARGET_POWER,
                    alpha: float = 0.05, analysis: str = RRRC, max_cases: int = MAX_CASES) -> np.ndarray:
    """Smallest number of cases (2..max_cases) giving power > ``target`` for each number of readers.

    As RJafroc's ``SsSampleSizeKGivenJ``: K = 2, 3, ... until the power exceeds the target.

    Args:
        readers: int or int array (J,). Other arguments: see :func:`power`.

    Returns:
        int64 array shaped like ``readers``: the number of cases, or -1 where even ``max_cases``
        cases fall short (for example when Var(T:R) alone keeps the power below the target).
    """
    j = np.atleast_1d(np.asarray(readers, dtype=int))
    k = np.arange(2, max_cases + 1)
    pw = power(j[:, None], k[None, :], effect=effect, components=components, alpha=alpha, analysis=analysis)
    enough = np.nan_to_num(pw, nan=0.0) > target
    first = np.where(enough.any(axis=1), k[enough.argmax(axis=1)], -1)
    return first.reshape(np.shape(readers)) if np.ndim(readers) else first[0]


@dataclass(frozen=True)
class SampleSize:
    """Power of a grid of designs and the smallest designs reaching the target power.

    Attributes:
        effect: effect size used; alpha, target, analysis: as given.
        readers: int (nJ,), cases: int (nK,) grid; power: float64 (nJ, nK).
        cases_needed: int64 (nJ,) smallest K per number of readers (-1: none up to ``max_cases``).
        smallest: (readers, cases) of the design with the fewest reads per treatment (J x K) among
            ``cases_needed``, fewer readers on a tie; None when no design reaches the target.
    """

    effect: float
    alpha: float
    target: float
    analysis: str
    readers: np.ndarray
    cases: np.ndarray
    power: np.ndarray
    cases_needed: np.ndarray
    smallest: tuple[int, int] | None

    def table(self) -> pd.DataFrame:
        """Power grid as a DataFrame: index = readers, columns = cases."""
        return pd.DataFrame(self.power, index=pd.Index(self.readers, name="readers"),
                            columns=pd.Index(self.cases, name="cases"))

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN power -> None)."""
        return {"effect": self.effect, "alpha": self.alpha, "target": self.target, "analysis": self.analysis,
                "readers": self.readers.tolist(), "cases": self.cases.tolist(),
                "power": [[None if not np.isfinite(x) else float(x) for x in row] for row in self.power],
                "cases_needed": {int(j): (int(k) if k > 0 else None)
                                 for j, k in zip(self.readers, self.cases_needed, strict=True)},
                "smallest": list(self.smallest) if self.smallest else None}


def sample_size(components: VarianceComponents, *, effect: float, readers: Sequence[int] = READERS_GRID,
                cases: Sequence[int] = CASES_GRID, target: float = TARGET_POWER, alpha: float = 0.05,
                analysis: str = RRRC, max_cases: int = MAX_CASES) -> SampleSize:
    """Power grid and smallest designs for the next study (module docstring for the method).

    Args:
        components: the pilot's variance components. effect: difference to detect.
        readers, cases: the grid (default 3-15 readers x 50, 100, ..., 500 cases).
        target, alpha, analysis, max_cases: see :func:`power` and :func:`cases_for_power`.

    Returns:
        :class:`SampleSize`.

    Raises:
        MrmcError: see :func:`power`; effect 0 (no design can detect it).
    """
    if not np.isfinite(effect) or effect == 0:
        raise MrmcError("The effect size must be a non-zero number (the difference of figures of merit to "
                        "detect, for example 0.05).")
    j = np.asarray(readers, dtype=int)
    k = np.asarray(cases, dtype=int)
    grid = power(j[:, None], k[None, :], effect=effect, components=components, alpha=alpha, analysis=analysis)
    needed = np.atleast_1d(cases_for_power(j, effect=effect, components=components, target=target, alpha=alpha,
                                           analysis=analysis, max_cases=max_cases))
    ok = needed > 0
    smallest = None
    if ok.any():
        reads = np.where(ok, j * needed, np.iinfo(np.int64).max)
        best = int(np.lexsort((j, reads))[0])
        smallest = (int(j[best]), int(needed[best]))
    return SampleSize(float(effect), alpha, target, analysis, j, k, grid, needed, smallest)


def from_result(result: MrmcResult, *, effect: float | None = None, treatment=None, reference=None,
                **kwargs) -> SampleSize:
    """:func:`sample_size` from an analysis, at the observed effect or at ``effect``.

    Args:
        result: the pilot's :class:`MrmcResult`.
        effect: effect size (default: the observed difference ``treatment`` minus ``reference``, by
            default the first stored difference).
        kwargs: passed to :func:`sample_size`.
    """
    if effect is None:
        d = result.differences[0] if treatment is None and reference is None else result.difference(
            treatment, reference)
        effect = d.estimate
    return sample_size(result.components, effect=effect, **kwargs)
