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

Lesion marks (heading "Lesion marks"): the reader's own marks of the current step, each with a
"Delete" button, and a form (number inputs "Slice", "x (pixel column)", "y (pixel row)", slider
"Rating (1-5)", button "Add mark"); in the aided step the unaided marks are listed as locked and,
when the case has AI nodule findings, a table of them with "Take AI finding <k> as a mark" buttons
(slider "Rating of a finding you take"). The unaided step shows no AI output at all (no result, no
findings, no viewer): the service does not return them before the AI is shown
(``ReaderStudyService.ai_view`` raises a ``BlindingError``), and its slices are plain pictures
(:func:`show_images`) with marks typed in the form.

The aided step (and, in "AI shown at once" lists, the case from its opening) shows the AI as Read a
study does: the shared viewer ``dashboard.viewer.slice_viewer`` in an ``st.fragment``
(:func:`aided_viewer`; widget keys prefixed ``mrl_v_<case id>_``: chart, slider "Slice", button
"Go to most suspicious slice", the Grad-CAM overlay "Grad-CAM for ..."), with the AI findings'
circles (labelled by rank, gold) and the reader's own aided marks (labelled "M<k>", dotted blue,
:data:`MARK_CIRCLE_MM` across: a mark has no size). A click on the image picks a centre: the
form "Add a mark at the clicked point" (slider "Rating of the clicked mark", button "Add mark
here") adds it; the typed form stays below. When the study store no longer holds the series, the
page says so and the marks are typed.
"""

from __future__ import annotations

import streamlit as st

from core.domain import WINDOW_PRESETS, Finding, WindowPreset
from dashboard.components import READ_ROLES, SessionUser, error_boundary, flash, run_page
from dashboard.resources import get_session_factory
from dashboard.viewer import Circle, Click, slice_viewer
from services.reader_study import AiView, BlindingError, CaseStep, ReaderCase, ReaderStudyService, ReadingMode

#: What a mark's rating means (shown as help).
RATING_HELP = "1 = probably not a nodule ... 5 = certainly a nodule needing work-up"

OPENED_KEY = "mrl_opened"
#: Diameter (mm) of the circle drawn for a reader's own mark in the viewer (a mark is a centre, no size).
MARK_CIRCLE_MM = 5.0
#: Colours of the circles: AI findings (as on Read a study) and the reader's own marks.
FINDING_COLOUR, MARK_COLOUR = "#FFD700", "#00BFFF"
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


def show_images(case: ReaderCase) -> int | None:
    """The case's slices (lung window) with a slice slider, or a note that they cannot be shown.

    Returns:
        the number of slices, or None when the images cannot be shown.
    """
    from core.imaging import view

    series = load_case_images(case)
    if series is None or not series.slices:
        st.info(f"The images of study {case.study_id} (key {case.study_key[:12]}) are no longer in the study "
                "store (evicted, or analysed before the store existed); open the study in your viewer.")
        return None
    n = len(series.slices)
    i = st.slider("Slice", 1, n, (n + 1) // 2, key=f"mrl_slice_{case.case_id}") if n > 1 else 1
    st.image(view(series.slices[i - 1].hu, WINDOW_PRESETS[WindowPreset.LUNG]), caption=f"Slice {i} of {n}",
             width="stretch")
    return n


def viewer_prefix(case: ReaderCase) -> str:
    """Key prefix of the viewer's widgets for a case (a new case opens at its most suspicious slice)."""
    return f"mrl_v_{case.case_id}_"


def click_key(case: ReaderCase) -> str:
    """Session key of the last image click on a case: (0-based slice, x column, y row)."""
    return f"mrl_click_{case.case_id}"


def case_circles(view: AiView, case: ReaderCase) -> list[Circle]:
    """The circles the viewer draws: the AI findings (by rank) and the reader's own aided marks ("M<k>").

    AI findings are centred on their voxel (``y`` row, ``x`` column) with their diameter in mm;
    marks get :data:`MARK_CIRCLE_MM`.
    """
    out = [Circle(f.slice_index, float(f.y), float(f.x), float(f.diameter_mm), label=str(f.rank),
                  colour=FINDING_COLOUR) for f in view.findings]
    out += [Circle(m.slice_index, float(m.y), float(m.x), MARK_CIRCLE_MM, label=f"M{k}", colour=MARK_COLOUR,
                   dash="dot") for k, m in enumerate(case.step_marks("aided"), start=1)]
    return out


def ai_view_of(svc: ReaderStudyService, user: SessionUser, case: ReaderCase) -> AiView | None:
    """The viewer's AI data once the AI is shown (None before: the service refuses it, the blinding)."""
    if case.ai is None:
        return None
    try:
        return svc.ai_view(user.id, case.case_id)
    except BlindingError:
        return None


@st.fragment
def aided_viewer(svc: ReaderStudyService, user: SessionUser, case: ReaderCase, series, view: AiView) -> None:
    """The shared viewer with the case's AI result, and a form that adds a mark where the image was clicked.

    Args:
        series: the case's ``core.imaging.Series`` (``hu`` float32 (y, x) per slice) from the
            study store; its slice count equals the analysis' (checked by the caller).
        view: ``ReaderStudyService.ai_view`` of the case.
    """
    key = click_key(case)

    def remember(click: Click) -> None:
        st.session_state[key] = (int(click.slice_index), int(click.col), int(click.row))

    with error_boundary("My reading list"):
        slice_viewer(series, view.analysis, threshold=view.analysis.threshold, circles=case_circles(view, case),
                     on_click=remember, prefix=viewer_prefix(case))
    clicked = st.session_state.get(key)
    if clicked is None:
        st.caption("Click the centre of a lesion on the image to mark it, or type it below.")
        return
    z, x, y = clicked
    with st.form(f"mrl_click_form_{case.case_id}"):
        st.markdown(f"**Add a mark at the clicked point**: slice {z + 1}, x {x}, y {y}")
        rating = st.select_slider("Rating of the clicked mark", options=[1, 2, 3, 4, 5], value=3,
                                  key=f"mrl_click_rating_{case.case_id}", help=RATING_HELP)
        added = st.form_submit_button("Add mark here", key="mrl_click_add", type="primary")
    if added:
        with error_boundary("My reading list"):
            svc.add_mark(user.id, case.case_id, step="aided", slice_index=z, x=float(x), y=float(y),
                         rating=int(rating))
            st.session_state.pop(key, None)
            flash("Mark added.")
            st.rerun()


def show_case(svc: ReaderStudyService, user: SessionUser, case: ReaderCase) -> int | None:
    """The case's images: the viewer with the AI once shown, else (or without a stored series) plain slices.

    Returns:
        the number of slices, or None when the images cannot be shown.
    """
    view = ai_view_of(svc, user, case)
    if view is None:
        return show_images(case)
    series = load_case_images(case)
    if series is None or len(series.slices) != len(view.analysis.probabilities):
        return show_images(case)
    aided_viewer(svc, user, case, series, view)
    return len(series.slices)


def list_marks(svc: ReaderStudyService, user: SessionUser, case: ReaderCase, step: str, *, editable: bool) -> None:
    """The reader's own current marks of ``step``, each with a Delete button when editable."""
    marks = case.step_marks(step)
    st.markdown(f"**Your {step} marks**" + ("" if editable else " (locked)"))
    if not marks:
        st.caption("No marks yet." if editable else "No marks.")
        return
    for n, m in enumerate(marks, start=1):
        origin = (" · taken from the AI" if m.nodule_id is not None else
                  " · copied from your unaided marks" if m.copied_from_id is not None else "")
        c1, c2 = st.columns([5, 1])
        c1.markdown(f"Mark {n}: slice {m.slice_index + 1}, x {m.x:g}, y {m.y:g}, rating {m.rating}{origin}")
        if editable and c2.button("Delete", key=f"mrl_del_{m.mark_id}"):
            with error_boundary("My reading list"):
                svc.delete_mark(user.id, m.mark_id)
                flash(f"Mark {n} deleted.")
                st.rerun()


def add_mark_form(svc: ReaderStudyService, user: SessionUser, case: ReaderCase, step: str,
                  n_slices: int | None) -> None:
    """A form that adds a mark in ``step`` from a typed centre and rating."""
    k = f"{step}_{case.case_id}"
    with st.form(f"mrl_mark_form_{k}"):
        c1, c2, c3, c4 = st.columns(4)
        z = c1.number_input("Slice", min_value=1, max_value=n_slices, value=1, step=1, key=f"mrl_mark_slice_{k}",
                            help="1 = the first slice, as under the image")
        x = c2.number_input("x (pixel column)", min_value=0.0, value=0.0, step=1.0, key=f"mrl_mark_x_{k}")
        y = c3.number_input("y (pixel row)", min_value=0.0, value=0.0, step=1.0, key=f"mrl_mark_y_{k}")
        rating = c4.select_slider("Rating (1-5)", options=[1, 2, 3, 4, 5], value=3, key=f"mrl_mark_rating_{k}",
                                  help=RATING_HELP)
        added = st.form_submit_button("Add mark", key=f"mrl_mark_add_{step}")
    if added:
        with error_boundary("My reading list"):
            svc.add_mark(user.id, case.case_id, step=step, slice_index=int(z) - 1, x=x, y=y, rating=int(rating))
            flash("Mark added.")
            st.rerun()


def ai_findings(svc: ReaderStudyService, user: SessionUser, case: ReaderCase) -> None:
    """The AI's nodule findings (aided step only) with a button per finding to take it as a mark."""
    findings = case.ai.findings if case.ai is not None else ()
    if not findings:
        return
    st.markdown("**AI nodule findings**")
    st.dataframe([{"finding": f.rank, "slice": f.slice_index + 1, "x": f.x, "y": f.y,
                   "diameter (mm)": round(f.diameter_mm, 1), "p(nodule)": round(f.p_nodule, 2),
                   "malignancy (1-5)": round(f.malignancy, 1)} for f in findings],
                 hide_index=True, key="mrl_ai_findings")
    rating = st.select_slider("Rating of a finding you take", options=[1, 2, 3, 4, 5], value=3,
                              key=f"mrl_take_rating_{case.case_id}", help=RATING_HELP)
    taken = {m.nodule_id for m in case.step_marks("aided") if m.nodule_id is not None}
    for f in findings:
        if st.button(f"Take AI finding {f.rank} as a mark", key=f"mrl_take_{f.nodule_id}",
                     disabled=f.nodule_id in taken):
            with error_boundary("My reading list"):
                svc.take_ai_finding(user.id, case.case_id, f.nodule_id, rating=int(rating))
                flash(f"AI finding {f.rank} taken as a mark.")
                st.rerun()


def marks_section(svc: ReaderStudyService, user: SessionUser, case: ReaderCase, n_slices: int | None) -> None:
    """The lesion marks of the case in its current step (the service enforces the same rules)."""
    if case.step == CaseStep.AIDED_READ:
        step = "aided"
    elif case.mode != ReadingMode.AI_AT_ONCE.value and case.step in (CaseStep.UNAIDED_READ, CaseStep.SHOW_AI):
        step = "unaided"
    else:
        return
    st.subheader("Lesion marks")
    st.caption("Mark each lesion by its centre: type the slice and the pixel column (x) and row (y), and rate it. "
               + RATING_HELP + ".")
    if step == "aided" and case.mode == ReadingMode.AI_AFTER_UNAIDED.value:
        list_marks(svc, user, case, "unaided", editable=False)
    list_marks(svc, user, case, step, editable=True)
    add_mark_form(svc, user, case, step, n_slices)
    if step == "aided":
        ai_findings(svc, user, case)


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
    n_slices = show_case(svc, user, case)
    if case.unaided is not None:
        st.markdown(f"Your unaided read: **{case.unaided.finding}**, confidence {case.unaided.confidence}"
                    + (" (locked)" if case.ai is not None else ""))
    if case.step == CaseStep.AIDED_READ:
        show_ai(case)
    marks_section(svc, user, case, n_slices)
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
        got = read_form(case, "aided")
        if got:
            svc.record_aided(user.id, case.case_id, finding=got[0], confidence=got[1])
            flash(f"Case {case.position} saved.")
            st.rerun()


if __name__ == "__main__":
    run_page(body, roles=READ_ROLES, title="My reading list", what="read cases of a reading list")
