"""The System Usability Scale (SUS): the ten standard statements and the score.

Source: Brooke J. "SUS: a 'quick and dirty' usability scale". In: Jordan PW et al. (eds.),
Usability Evaluation in Industry, Taylor & Francis, 1996, pp. 189-194. Each statement is answered
on a 5-point scale, 1 = strongly disagree ... 5 = strongly agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

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
