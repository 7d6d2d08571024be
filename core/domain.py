"""LungReview's closed choices and the rules that more than one layer applies: one place each.

* :class:`Finding` (normal < benign < malignant) and :data:`CLASS_NAMES`, :class:`Agreement`,
  :class:`Role`;
* display windows: :class:`Window`, :class:`WindowPreset` and the :data:`WINDOW_PRESETS` table;
* the suspicious-class rule (:func:`suspicious_index`, :func:`suspicious_class`);
* the out-of-distribution rule and its label (:func:`series_is_ood`, :func:`any_flagged`,
  :func:`shown_label`, :data:`OOD_LABEL`, :data:`NOT_APPLICABLE`);
* the System Usability Scale questionnaire and its score (:func:`sus_score`);
* :data:`DISCLAIMER` and :data:`APP_VERSION`.

Pure Python and NumPy: every layer (core, db, services, models, dashboard) may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from numbers import Integral

import numpy as np

APP_VERSION = "0.1.0"
DISCLAIMER = (
    "LungReview is a research tool. It is not a medical device and must not be used for diagnosis: "
    "every AI output is a suggestion for a qualified radiologist to check."
)


class Finding(StrEnum):
    """A read of a study, by the AI or by a radiologist; ordered normal < benign < malignant."""

    NORMAL = "normal"
    BENIGN = "benign"
    MALIGNANT = "malignant"


#: Class order of every model output and confusion matrix (rows true, columns predicted).
CLASS_NAMES: tuple[str, ...] = tuple(f.value for f in Finding)


class Agreement(StrEnum):
    """The radiologist's agreement with the AI's read."""

    AGREE = "agree"
    DISAGREE = "disagree"
    PARTLY = "partly"


class NoduleDecision(StrEnum):
    """What one row of a radiologist's per-nodule read says (``nodule_reads.decision``).

    ``accept``/``reject``: a decision on an AI finding (accept may correct the diameter and give
    the type). ``add``: a nodule the reader found that the AI did not list. ``withdraw``: takes
    back the reader's earlier row it supersedes (an AI finding becomes undecided again, an added
    nodule is removed).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    ADD = "add"
    WITHDRAW = "withdraw"


class NoduleType(StrEnum):
    """Attenuation type of a pulmonary nodule as Lung-RADS v2022 distinguishes them (ACR)."""

    SOLID = "solid"
    PART_SOLID = "part-solid"
    GROUND_GLASS = "ground-glass"
    CALCIFIED = "calcified"


class LungRads(StrEnum):
    """ACR Lung-RADS v2022 assessment categories (without the S and C modifiers).

    0 incomplete; 1 negative; 2 benign appearance or behaviour; 3 probably benign; 4A, 4B, 4X
    suspicious / very suspicious (American College of Radiology, Lung-RADS v2022, 2022).
    """

    CAT_0 = "0"
    CAT_1 = "1"
    CAT_2 = "2"
    CAT_3 = "3"
    CAT_4A = "4A"
    CAT_4B = "4B"
    CAT_4X = "4X"



class Role(StrEnum):
    """What a signed-in user may do."""

    RADIOLOGIST = "radiologist"
    LEAD = "lead"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


class WindowPreset(StrEnum):
    """Named display windows. ``DICOM`` means the file's own WindowCenter/WindowWidth."""

    LUNG = "lung"
    MEDIASTINUM = "mediastinum"
    BONE = "bone"
    IQ_OTHNCCD = "iq-othnccd"
    DICOM = "dicom"


@dataclass(frozen=True)
class Window:
    """A VOI window in Hounsfield units: ``center`` (C) and ``width`` (W), both in HU.

    ``floor`` is the output level, in [0, 1), of the window's lower edge. It is 0 for every
    standard display window (DICOM PS3.3 C.11.2.1.2.1). Some 8-bit exports map the window to
    [floor, 1] and everything below it to 0; the IQ-OTH/NCCD JPGs do so with a floor of about
    128/255 (see ``WINDOW_PRESETS``).
    """

    center: float
    width: float
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not self.width >= 1:
            raise ValueError(f"window width must be at least 1 HU, got {self.width}")
        if not 0.0 <= self.floor < 1.0:
            raise ValueError(f"window floor must lie in [0, 1), got {self.floor}")


#: Standard CT display windows (centre/width in HU), as in common radiology practice
#: (e.g. Radiopaedia "Windowing (CT)"): lung 1500/-600, mediastinum 350/50, bone 2000/500.
#: IQ_OTHNCCD is the window the IQ-OTH/NCCD JPGs appear to have been exported with. They are not
#: a plain linear window: 92 % of pixels are grey 0-7 and the rest 122-255, nothing in between,
#: so the export maps the window to [128, 255] and all below it to black (floor 128/255).
#: Centre and width were estimated with ``core.windowing.estimate_export_window`` from every
#: third JPG against the B40f series of the Lung-PET-CT-Dx study (HU): best C 0 / W 260 HU
#: (neighbours C -20..0, W 240..300 fit within 0.3 grey levels; mean quantile error 5 grey
#: levels). The dataset's description states W 350-1200, C 50-600; the best fit inside that
#: range (C 600 / W 360) is twice as far off (10.5 grey levels).
WINDOW_PRESETS: dict[WindowPreset, Window] = {
    WindowPreset.LUNG: Window(center=-600.0, width=1500.0),
    WindowPreset.MEDIASTINUM: Window(center=50.0, width=350.0),
    WindowPreset.BONE: Window(center=500.0, width=2000.0),
    WindowPreset.IQ_OTHNCCD: Window(center=0.0, width=260.0, floor=128.0 / 255.0),
}


# ------------------------------------------------------------------------------ suspicious class
#: Classes that count as the suspicious one, in order of preference (:func:`suspicious_index`).
SUSPICIOUS: tuple[str, ...] = ("malignant", "cancer")

def suspicious_index(class_names: Sequence[str]) -> int:
    """Index of the class a "suspicious" score, the malignant-versus-rest metrics and the
    worklist's AI column are about.

    Rule: ``"malignant"`` if it is a class, else ``"cancer"``, else the last class (the registry
    convention: a binary model lists its positive class last).

    Args:
        class_names: the model's class names in output order (at least one).

    Returns:
        int index into ``class_names``.

    Raises:
        ValueError: ``class_names`` is empty.
    """
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("class_names is empty; a model card lists at least one class")
    for name in SUSPICIOUS:
        if name in names:
            return names.index(name)
    return len(names) - 1


def suspicious_class(class_names: Sequence[str]) -> str:
    """Name of the suspicious class: ``class_names[suspicious_index(class_names)]``.

    Raises:
        ValueError: ``class_names`` is empty.
    """
    return str(list(class_names)[suspicious_index(class_names)])


# ------------------------------------------------------------------------------ out of distribution
#: Text label of a series the guard calls out of distribution (CSV and CLI outputs, stored results).
OOD_LABEL = "out-of-distribution"
#: What a reader sees instead of the AI's finding when the guard flagged a slice of the series.
NOT_APPLICABLE = "not applicable"
#: Why, in the words the pages use.
OOD_REASON = "outside the training data"


def series_is_ood(ood: Sequence[bool] | np.ndarray) -> bool:
    """The series as a whole is out of distribution: MORE THAN HALF of its slices are flagged.

    Args:
        ood: bool (n,) per-slice flags of ``core.ood.check_series``.
    """
    flags = np.asarray(ood, dtype=bool)
    return bool(flags.sum() * 2 > flags.size)


def any_flagged(ood: bool | Sequence[bool] | np.ndarray) -> bool:
    """The AI result is shown as :data:`NOT_APPLICABLE`: the guard flagged ANY slice of the series.

    Args:
        ood: bool (n,) per-slice flags, or the stored flag of an inference (already "any").
    """
    return bool(np.any(np.asarray(ood, dtype=bool)))


def shown_label(finding: str, flagged: bool, *, model_said: bool = False) -> str:
    """The AI's series label as a reader sees it.

    Args:
        finding: the model's series finding (a :class:`Finding` value).
        flagged: :func:`any_flagged` of the series' slices.
        model_said: also name the model's own finding when flagged (tables that list results).

    Returns:
        ``finding`` when not flagged; else "not applicable (outside the training data)", or with
        ``model_said`` "not applicable (outside the training data; model said <finding>)".
    """
    if not flagged:
        return str(finding)
    return f"{NOT_APPLICABLE} ({OOD_REASON}; model said {finding})" if model_said else f"{NOT_APPLICABLE} ({OOD_REASON})"


# ------------------------------------------------------------------------------ System Usability Scale
# Brooke J. "SUS: a 'quick and dirty' usability scale". In: Jordan PW et al. (eds.), Usability
# Evaluation in Industry, Taylor & Francis, 1996, pp. 189-194. Each statement is answered on a
# 5-point scale, 1 = strongly disagree ... 5 = strongly agree.

#: The ten SUS statements, in their standard order (Brooke 1996). Odd statements are worded
#: positively, even ones negatively. "system" may be read as "LungReview".
SUS_STATEMENTS: tuple[str, ...] = (
    "I think that I would like to use this system frequently.",
    "I found the system unnecessarily complex.",
    "I thought the system was easy to use.",
    "I think that I would need the support of a technical person to be able to use this system.",
    "I found the various functions in this system were well integrated.",
    "I thought there was too much inconsistency in this system.",
    "I would imagine that most people would learn to use this system very quickly.",
    "I found the system very cumbersome to use.",
    "I felt very confident using the system.",
    "I needed to learn a lot of things before I could get going with this system.",
)

#: Labels of the answer scale, 1..5.
SUS_SCALE: tuple[str, ...] = ("Strongly disagree", "Disagree", "Neutral", "Agree", "Strongly agree")


class SusError(ValueError):
    """The SUS answers are incomplete or out of range; the message says which."""


def validate_answers(answers: Sequence[int]) -> list[int]:
    """Check that ``answers`` are exactly ten whole numbers from 1 to 5 and return them as ints.

    Raises:
        SusError: not a sequence of ten, a missing answer (None), a non-integer, or a value
            outside 1-5 (message names the statement number).
    """
    if isinstance(answers, str | bytes) or not isinstance(answers, Sequence):
        raise SusError("SUS answers must be a list of ten numbers from 1 to 5.")
    if len(answers) != len(SUS_STATEMENTS):
        raise SusError(f"SUS needs an answer to each of the 10 statements; got {len(answers)} answers.")
    out: list[int] = []
    for i, a in enumerate(answers, start=1):
        if a is None:
            raise SusError(f"SUS statement {i} has no answer; please answer all 10 statements.")
        if isinstance(a, bool) or not isinstance(a, Integral):
            if isinstance(a, float) and a.is_integer():
                a = int(a)
            else:
                raise SusError(f"SUS statement {i}: the answer must be a whole number from 1 to 5, got {a!r}.")
        if not 1 <= int(a) <= 5:
            raise SusError(f"SUS statement {i}: the answer must be from 1 to 5, got {a}.")
        out.append(int(a))
    return out


def sus_score(answers: Sequence[int]) -> float:
    """The SUS score of one respondent, 0-100 (Brooke 1996).

    Each odd-numbered (positive) statement contributes ``answer - 1``, each even-numbered
    (negative) statement ``5 - answer``; the sum (0-40) times 2.5 is the score. All 3s give 50,
    the best answers (5, 1, 5, 1, ...) give 100, the worst (1, 5, 1, 5, ...) give 0.

    Args:
        answers: ten whole numbers 1-5, statement order of :data:`SUS_STATEMENTS`.

    Returns:
        float in [0, 100], a multiple of 2.5.

    Raises:
        SusError: see :func:`validate_answers`.
    """
    a = validate_answers(answers)
    total = sum((r - 1) if i % 2 == 0 else (5 - r) for i, r in enumerate(a))
    return total * 2.5
