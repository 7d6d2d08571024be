"""My reading list (radiologists): the next case, the unaided read, then the AI result and the aided read.

The order of the steps and the blinding are enforced by ``services.reader_study`` (an aided read before
the unaided one, or a changed unaided read after the AI was shown, is refused there); this page
shows only what the reader may see: their own reads and, once shown, the AI result. Never the
reference standard or other readers' reads (the service does not return them).

Images: :func:`load_case_images` is the one place that opens a case's images from the study
store. It returns None until the study store is wired in, and the page then says that the
images cannot be shown here.

Browser: selectbox "Reading list"; the progress text "<n> of <total> read"; heading
"Case <position> of <total>"; for the unaided step a form with radio "Your finding", slider
"Confidence (1-5)" and button "Save unaided read"; then button "Show the AI result"; then the AI
result and a form with radio "Final finding", slider "Final confidence (1-5)" and button
"Save final read". When every case is read: "You have read all <total> cases of this list".
"""

from __future__ import annotations

import streamlit as st

from core.domain import WINDOW_PRESETS, Finding, WindowPreset
from dashboard.components import READ_ROLES, SessionUser, flash, run_page
from dashboard.resources import get_session_factory
from services.reader_study import CaseStep, ReaderCase, ReaderStudyService, ReadingMode

OPENED_KEY = "mrl_opened"
MODE_TEXT: dict[str, str] = {
    ReadingMode.AI_AFTER_UNAIDED.value: "Read each case first without the AI; the AI result appears after your "
                                        "unaided read is saved, which then cannot be changed.",
    ReadingMode.AI_AT_ONCE.value: "The AI result is shown with each case.",
    ReadingMode.NO_AI.value: "This list is read without the AI.",
}


def service() -> ReaderStudyService:
    """The reader-study service on the app's database."""
    return ReaderStudyService(get_session_factory())


def load_case_images(case: ReaderCase):
    """The images of a case from the study store, or None when they cannot be opened here.

    Args:
        case: the case (``study_id``, ``series_key`` identify the series).

    Returns:
        ``core.imaging.Series`` (slices with ``hu`` float32 (y, x) in HU) or None when the store
        no longer holds the series (evicted, or analysed before the store existed).
    """
    from dashboard.resources import get_session_factory
    from services.reading import open_stored_series

    return open_stored_series(get_session_factory(read_only=True), case.study_id, case.series_key)


def show_images(case: ReaderCase) -> None:
    """The case's slices (lung window) with a slice slider, or a note that they cannot be shown."""
    from core.imaging import view

    series = load_case_images(case)
    if series is None or not series.slices:
        st.info(f"The images of study {case.study_id} (key {case.study_key[:12]}) are no longer in the study "
                "store (evicted, or analysed before the store existed); open the study in your viewer.")
        return
    n = len(series.slices)
    i = st.slider("Slice", 1, n, (n + 1) // 2, key=f"mrl_slice_{case.case_id}") if n > 1 else 1
    st.image(view(series.slices[i - 1].hu, WINDOW_PRESETS[WindowPreset.LUNG]), caption=f"Slice {i} of {n}",
             width="stretch")


def read_form(case: ReaderCase, phase: str) -> tuple[str, int] | None:
    """A finding + confidence form; returns (finding, confidence) when submitted."""
    unaided = phase == "unaided"
    with st.form(f"mrl_{phase}_{case.case_id}"):
        finding = st.radio("Your finding" if unaided else "Final finding", [f.value for f in Finding], index=None,
                           horizontal=True, key=f"mrl_{phase}_finding_{case.case_id}")
        confidence = st.slider("Confidence (1-5)" if unaided else "Final confidence (1-5)", 1, 5, 3,
                               key=f"mrl_{phase}_conf_{case.case_id}")
        submitted = st.form_submit_button("Save unaided read" if unaided else "Save final read",
                                          key=f"mrl_{phase}_save", type="primary")
    if not submitted:
        return None
    if finding is None:
        st.error("Choose a finding before saving.")
        return None
    return finding, int(confidence)


def show_ai(case: ReaderCase) -> None:
    """The AI result the reader was shown."""
    ai = case.ai
    if ai is None:
        return
    st.subheader("AI result")
    text = f"**{ai.label}** (score {ai.score:.2f}, model {ai.model_id})"
    if ai.ood:
        text += ": the input looks unlike the training data, so the AI result does not apply"
    st.markdown(text)


def body(user: SessionUser) -> None:
    """The reader's page."""
    svc = service()
    lists = svc.my_lists(user.id)
    if not lists:
        st.info("No reading list is assigned to you. The pilot coordinator assigns lists.")
        return
    by_id = {x.list_id: x for x in lists}
    list_id = st.selectbox("Reading list", list(by_id), key="mrl_list",
                           format_func=lambda i: f"{by_id[i].name} ({by_id[i].n_done} of {by_id[i].total} read)")
    case = svc.next_case(user.id, list_id)
    if case is None:
        st.success(f"You have read all {by_id[list_id].total} cases of this list. Thank you.")
        return
    st.progress(case.n_done / case.total, text=f"{case.n_done} of {case.total} read")
    st.caption(MODE_TEXT.get(case.mode, ""))
    opened: set = st.session_state.setdefault(OPENED_KEY, set())
    if case.case_id not in opened:
        case = svc.open_case(user.id, case.case_id)
        opened.add(case.case_id)
    st.header(f"Case {case.position} of {case.total}")
    show_images(case)
    if case.unaided is not None:
        st.markdown(f"Your unaided read: **{case.unaided.finding}**, confidence {case.unaided.confidence}"
                    + (" (locked)" if case.ai is not None else ""))
    if case.step == CaseStep.UNAIDED_READ:
        got = read_form(case, "unaided")
        if got:
            svc.record_unaided(user.id, case.case_id, finding=got[0], confidence=got[1])
            flash("Unaided read saved.")
            st.rerun()
    elif case.step == CaseStep.SHOW_AI:
        st.caption("Showing the AI result locks your unaided read.")
        if st.button("Show the AI result", key="mrl_show_ai", type="primary"):
            svc.show_ai(user.id, case.case_id)
            st.rerun()
    elif case.step == CaseStep.AIDED_READ:
        show_ai(case)
        got = read_form(case, "aided")
        if got:
            svc.record_aided(user.id, case.case_id, finding=got[0], confidence=got[1])
            flash(f"Case {case.position} saved.")
            st.rerun()


if __name__ == "__main__":
    run_page(body, roles=READ_ROLES, title="My reading list", what="read cases of a reading list")
