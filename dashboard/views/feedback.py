"""Pilot feedback: the System Usability Scale (SUS, Brooke 1996) and two free-text questions.

Browser: ten radio groups labelled "1. I think that I would like to use this system frequently."
... "10. ..." (options "1 Strongly disagree" ... "5 Strongly agree", none preselected), text areas
"What helped you?" and "What got in the way?", button "Submit feedback". An incomplete form shows
"Please answer all ten statements"; a complete one shows "Thank you: your SUS score is ...".
"""

from __future__ import annotations

import streamlit as st

from core.domain import SUS_SCALE, SUS_STATEMENTS
from dashboard.components import ALL_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services.accounts import submit_feedback

OPTIONS: tuple[int, ...] = (1, 2, 3, 4, 5)


def missing_answers(answers: list[int | None]) -> list[int]:
    """1-based numbers of the statements left unanswered (None)."""
    return [i for i, a in enumerate(answers, start=1) if a is None]


def body(user: SessionUser) -> None:
    """The SUS form; refuses submission until all ten statements are answered."""
    st.write(
        "Please rate each statement about LungReview from 1 (strongly disagree) to 5 (strongly agree). "
        "Your answers are stored with your role, not shown with your name."
    )
    with st.form("sus_form"):
        answers: list[int | None] = []
        for i, statement in enumerate(SUS_STATEMENTS, start=1):
            answers.append(
                st.radio(f"{i}. {statement}", OPTIONS, index=None, horizontal=True, key=f"sus_q{i}",
                         format_func=lambda v: f"{v} {SUS_SCALE[v - 1]}")
            )
        helped = st.text_area("What helped you?", key="fb_helped", max_chars=5000)
        hindered = st.text_area("What got in the way?", key="fb_hindered", max_chars=5000)
        submitted = st.form_submit_button("Submit feedback", key="fb_submit", type="primary")
    if not submitted:
        return
    missing = missing_answers(answers)
    if missing:
        st.error(
            "Please answer all ten statements before submitting; still open: "
            + ", ".join(str(i) for i in missing) + "."
        )
        return
    score = submit_feedback(get_session_factory(), user.id, answers, helped=helped, hindered=hindered)
    st.success(f"Thank you: your SUS score is {score:.1f} out of 100. Your feedback was saved.")


if __name__ == "__main__":
    run_page(body, roles=ALL_ROLES, title="Pilot feedback", what="give feedback")
