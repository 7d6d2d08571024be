"""Pilot feedback: one System Usability Scale questionnaire (Brooke 1996) with two free-text answers."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from core.domain import Role, SusError, sus_score, validate_answers
from db.repository.common import ValidationError, _require_role, _user, log_event
from db.schema import AuditAction, Feedback, User


def add_feedback(s: Session, *, user: User | int, answers: Sequence[int], helped: str = "", hindered: str = "",
                 app_version: str) -> Feedback:
    """Record one SUS questionnaire (Brooke 1996) with the two free-text answers.

    Args:
        user: the active user answering (any role; their current role is stored with it).
        answers: the ten SUS answers, whole numbers 1-5, order of ``core.domain.SUS_STATEMENTS``.
        helped, hindered: free text ("what helped", "what got in the way"), at most 5000 each.
        app_version: ``core.domain.APP_VERSION`` at the time.

    Returns:
        The new Feedback (flushed), ``sus_score`` from ``core.domain.sus_score``.

    Raises:
        ValidationError: answers missing or out of range, text too long, no app version.
        NotFoundError / PermissionDenied: unknown or deactivated user.
    """
    try:
        a = validate_answers(answers)
    except SusError as exc:
        raise ValidationError(str(exc)) from None
    helped, hindered = str(helped or ""), str(hindered or "")
    if len(helped) > 5000 or len(hindered) > 5000:
        raise ValidationError("Free-text answers may have at most 5000 characters each.")
    app_version = str(app_version or "").strip()
    if not 1 <= len(app_version) <= 32:
        raise ValidationError("The app version (1-32 characters) is required.")
    who = _user(s, user, "user")
    _require_role(who, set(Role), "give feedback")
    row = Feedback(user_id=who.id, role=who.role, sus_score=sus_score(a), helped=helped, hindered=hindered,
                   app_version=app_version, **{f"q{i}": v for i, v in enumerate(a, start=1)})
    s.add(row)
    s.flush()
    log_event(s, user_id=who.id, action=AuditAction.FEEDBACK, object_type="feedback", object_id=row.id)
    return row
