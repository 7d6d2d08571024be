"""Read a study (radiologists, admins): upload, AI result, slice viewer with Grad-CAM and nodule
findings, own read.

Flow: upload DICOM files / a ZIP / JPG or PNG slices -> ``core.imaging.read_uploads`` (bad files
are listed, good ones read) -> pick study and series -> pick a model (default preselected) ->
"Analyse with AI" (``services.reading.ReadingService.analyse``: a series uploaded before is recognised
by its content hash and series key, and the stored inference of the same model file is reused;
then ``ReadingService.find_nodules``: the nodule detector scans a CT volume once per analysis and
detector file, and a series it refuses says why in one line; the service owns every database
transaction of this page). One script run per analysis: the result shows in the run that made it.
Then the series result, and in one ``st.fragment`` the viewer (``dashboard.viewer.slice_viewer``:
chart, slider, windows, Grad-CAM, lung outline, nodule circles, clicks on the image) beside the
findings panel (table, accept / reject with type and corrected diameter, nodules added by a
click or typed, Lung-RADS suggestion and the reader's category): everything in it reruns only the
fragment. Then the reader's own series read (form). Time to decision runs from the first display
of the AI result to each decision.

Keys, not volumes: a read upload is staged (``services.reading.stage``: its series go to the study store
and the server's shared memory cache) and the browser session keeps only references; Grad-CAM
heatmaps, overlay pictures, lung masks and nodule crops sit in caches shared by all sessions
(``dashboard.resources.shared_cache``). The analysed series is in the address (``?case=<series
id>``): a reload, a new tab or the worklist's "Open case" opens it from the study store without
its files.

Browser: file input "Upload DICOM files, a ZIP or JPG/PNG slices"; selectors "Study", "Series",
"Model"; button "Analyse with AI" (then "AI result" metric appears); chart, slider "Slice",
button "Go to most suspicious slice"; radio "Window" (Lung, Mediastinum, Bone, File's own,
IQ-OTH/NCCD export); checkboxes "Show Grad-CAM heatmap", "Show lung outline" and "Show all
candidates' circles", slider "Heatmap opacity", selector "Heatmap class"; the slice (click to
place a nodule) with the caption "Slice <i> of <n> ..."; heading "Nodule findings": table (test id
``findings_table``, one row chosen moves the viewer), selector "Finding", form with radio "Your
decision" (Accept, Reject), selector "Type", number "Corrected diameter (mm)", button "Save
decision", button "Withdraw my decision"; "Add a nodule the AI missed": numbers "Slice (add)",
"x (column)", "y (row)", "Diameter (mm)", selector "Type (add)", button "Add nodule"; Lung-RADS:
the suggestion, selector "Your Lung-RADS category", button "Save Lung-RADS"; button "Find nodules
with AI" when a stored analysis has no detection yet; form with radios "Your finding", "Do you
agree with the AI?", "Your confidence", "Was the heatmap helpful?", text area "Comment", button
"Save my read" (success text starts with "Read saved").
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import streamlit as st
from cachetools import LRUCache

from core.domain import Agreement, Finding, LungRads, NoduleType, suspicious_class
from core.imaging import Series
from core.lungrads import CAVEAT
from core.registry import ModelCard, RegistryError, default_model_id, get_card, list_cards
from core.settings import get_settings
from dashboard.components import READ_ROLES, SessionUser, current_user, run_page, show_problems
from dashboard.resources import get_reading_service, release_memory, shared_cache
from dashboard.viewer import (  # noqa: F401 - window_for, window_options: this page's helpers as before
    PRESET_LABELS,
    SHARED_PICTURES,
    Circle,
    Click,
    png_uri,
    slice_viewer,
    window_for,
    window_options,
)
from dashboard.views import pacs
from services.database import NotFoundError, PermissionDenied, RepositoryError, ValidationError
from services.export import NoduleExport
from services.nodules import AiFinding, NoduleFindings, ReaderNodules, axial_crop, midline_x_mm, side_of
from services.reading import (
    Analysis,
    CaseGoneError,
    SeriesRef,
    StagedUpload,
    StudyRef,
    analysis_key,
    load_series,
    read_upload,
    stage,
)

REVIEW_KEYS = ("review_finding", "review_agreement", "review_confidence", "review_heatmap", "review_comment")
#: Widget and state keys of the nodule read, cleared when another case opens.
NODULE_KEYS = ("nodule_pick", "findings_table", "findings_page", "nodule_decision", "nodule_type",
               "nodule_diameter", "add_slice", "add_x", "add_y", "add_diameter", "add_type", "lungrads_category",
               "_nodule_msg", "_table_pick", "_last_click", "viewer_image", "nodule_circles_all")
#: Columns of the findings table, in order (the crop early so that it shows in a narrow column).
FINDINGS_COLUMNS = ["rank", "crop", "slice", "side", "diameter (mm)", "p(nodule)", "malignancy (1-5)", "your read",
                    "centre (mm)"]
#: Findings per page of the findings table (a detection keeps up to 50 candidates, all paginated).
FINDINGS_PER_PAGE = 10
#: Detector stages in the order ``core.nodules.detect_nodules`` reports them (progress bar).
DETECTOR_STAGES = ("resample", "mask", "candidates", "network", "suppression")
#: Circle colours (CSS) by nodule status, and the chosen finding's.
STATUS_COLOURS = {"undecided": "#4FA3E0", "accepted": "#2ECC71", "corrected": "#2ECC71", "rejected": "#E4572E",
                  "added": "#FF4FD8"}
CHOSEN_COLOUR = "#FFD700"
NO_TYPE = "not given"


# ------------------------------------------------------------------------------- pure helpers
def upload_limit_mb() -> int:
    """Per-file upload limit in MB: the smaller of ``server.maxUploadSize`` and the settings'."""
    try:
        server = int(st.get_option("server.maxUploadSize"))
    except (RuntimeError, ValueError, TypeError):
        server = get_settings().max_upload_mb
    return min(server, get_settings().max_upload_mb)


def ood_summary(analysis: Analysis) -> str:
    """How many slices the guard flagged and its distinct reasons, as one sentence."""
    flagged = int(np.sum(analysis.ood))
    reasons = sorted({r for text in analysis.ood_reasons for r in str(text).split("; ") if r})
    text = f"{flagged} of {len(analysis.ood)} slice(s) flagged"
    return text + (": " + "; ".join(reasons) + "." if reasons else ".")


def finding_label(f: AiFinding, side: str) -> str:
    """"1 · slice 113 · right · 3.5 mm": how a finding is named in the selector (slice 1-based)."""
    return f"{f.rank} · slice {f.slice_index + 1} · {side} · {f.diameter_mm:.1f} mm"


def findings_table(findings: NoduleFindings, read: ReaderNodules, midline: float, crops: list[str]) -> pd.DataFrame:
    """The findings table: one row per AI finding (rank order) with the reader's current status.

    Columns: rank, crop (PNG data URI), slice (1-based), side (left / right against the midline:
    LPS +x is the patient's left), diameter (mm) (the reader's when corrected), p(nodule),
    malignancy (1-5), your read, centre (mm) "x, y, z" (patient LPS).
    """
    rows = []
    for f, crop in zip(findings.findings, crops, strict=True):
        state = read.state_of(f.nodule_id)
        status = state.status if state is not None else "undecided"
        if state is not None and state.nodule_type:
            status += f" ({state.nodule_type})"
        rows.append({"rank": f.rank, "slice": f.slice_index + 1, "side": side_of(f.centre_mm[0], midline),
                     "centre (mm)": ", ".join(f"{v:.1f}" for v in f.centre_mm),
                     "diameter (mm)": round(state.diameter_mm if state is not None else f.diameter_mm, 1),
                     "p(nodule)": round(f.p_nodule, 3), "malignancy (1-5)": round(f.malignancy, 1), "crop": crop,
                     "your read": status})
    return pd.DataFrame(rows, columns=FINDINGS_COLUMNS)


# ------------------------------------------------------------------------------------ widgets
def _cache(name: str, size: int) -> LRUCache:
    """This browser session's least-recently-used cache ``name`` of at most ``size`` entries."""
    if name not in st.session_state:
        st.session_state[name] = LRUCache(size)
    return st.session_state[name]


def _upload_ident(files) -> tuple:
    """Identity of the uploader's current files (Streamlit's file ids): no hashing on reruns."""
    return tuple((f.file_id, f.name, f.size) for f in files)


def _progress_callback(bar):
    def progress(*args) -> None:
        if len(args) >= 2 and args[1]:
            frac, text = float(args[0]) / float(args[1]), f"slice {int(args[0])} of {int(args[1])}"
        elif args:
            frac, text = float(args[0]), ""
        else:
            return
        bar.progress(min(max(frac, 0.0), 1.0), text=text)

    return progress


def _stage_progress(bar):
    """``progress(stage)`` for the nodule detector: the bar moves one step per stage."""
    def progress(stage: str) -> None:
        done = DETECTOR_STAGES.index(stage) if stage in DETECTOR_STAGES else 0
        bar.progress(min((done + 0.5) / len(DETECTOR_STAGES), 1.0), text=f"nodule detector: {stage}")

    return progress


def choose_model() -> ModelCard | None:
    """The model selector (the address's ``?model=`` or the default preselected); None when no model is
    registered."""
    cards = list_cards()
    if not cards:
        st.error("No AI model is registered yet; ask an admin to train and register one (python -m models.train).")
        return None
    ids = [c.id for c in cards]
    try:
        default = default_model_id()
    except RegistryError:
        default = ids[0]
    wanted = st.query_params.get("model")  # the worklist's "Open case" names the model it showed
    index = ids.index(wanted) if wanted in ids else ids.index(default) if default in ids else 0
    model_id = st.selectbox("Model", ids, index=index, key="model_id",
                            format_func=lambda i: i + ("  (default)" if i == default else ""))
    return get_card(model_id)


def _reset_case(key: str, analysis: Analysis) -> None:
    """New case on screen: start at the most suspicious slice, clear the previous read's answers,
    and start the time to decision."""
    if st.session_state.get("_case_key") == key:
        return
    st.session_state["_case_key"] = key
    for k in (*REVIEW_KEYS, *NODULE_KEYS, "_last_chart_pick", "_saved_review"):
        st.session_state.pop(k, None)
    st.session_state["slice_no"] = analysis.most_suspicious_index + 1
    st.session_state["_opened_at"] = time.time()


def show_result(series: Series, analysis: Analysis) -> None:
    """The series result: the recognised-upload note, the out-of-distribution warning, the metrics."""
    n = len(series.slices)
    pos = analysis.suspicious_index
    if analysis.reused:
        created = f"{analysis.created_at:%Y-%m-%d %H:%M} UTC" if analysis.created_at else "earlier"
        st.info(f"Recognised upload: this study is already in LungReview (study {analysis.study_id}). Showing "
                f"the stored AI result of {analysis.model_id} from {created}; the model was not re-run.")
    if analysis.any_ood:
        st.error(
            "**Out-of-distribution warning.** These images are unlike the data the model was trained on, so "
            "its output does not apply to them and is shown for reference only. "
            + ood_summary(analysis), icon="🚫")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("AI result", analysis.label_text)
    c2.metric(f"Series P({analysis.class_names[pos]})", f"{analysis.series_score:.3f}")
    c3.metric("Most suspicious slice", f"{analysis.most_suspicious_index + 1} of {n}")
    c4.metric("Analysis time", f"{analysis.latency_ms / 1000:.1f} s",
              help=f"Probabilities computed with {analysis.runtime or 'a runtime not recorded then'}; "
                   "Grad-CAM gradients with the Keras model.")


# ------------------------------------------------------------------------------------ nodules
def _scan(analysis: Analysis, series: Series, user: SessionUser, bar) -> NoduleFindings | None:
    """Run (or reuse) the nodule detector with a progress bar; None when none is registered or it failed
    to load (said in a warning: the slice classifier's result still shows)."""
    try:
        found = get_reading_service().find_nodules(analysis, series, user_id=user.id, progress=_stage_progress(bar))
    except RegistryError as exc:
        st.warning(f"The nodule detector could not be loaded ({exc}); only the slice classifier ran. Ask an admin.")
        return None
    except RepositoryError as exc:  # a detector output the database refuses: the classifier's result stays
        st.warning(f"The nodule detector's findings could not be recorded ({exc}); only the slice classifier's "
                   "result is shown. Ask an admin.")
        return None
    if found is not None:
        _keep_findings(analysis, found)
    return found


def _keep_findings(analysis: Analysis, found: NoduleFindings) -> None:
    """Keep the detection of an analysis in the session (the last 8)."""
    _cache("_nodules", 8)[analysis.key] = found


def nodule_findings(analysis: Analysis, series: Series, user: SessionUser) -> NoduleFindings | None:
    """The detection of this analysis: kept in the session, else stored, else the button "Find nodules with AI".

    Returns:
        The findings (or refusal), or None when there is none yet (or no detector is registered;
        the page says which).
    """
    cache = _cache("_nodules", 8)
    if analysis.key in cache:
        return cache[analysis.key]
    service = get_reading_service()
    try:
        detector = service.nodule_detector()
    except RegistryError as exc:
        st.caption(f"The nodule detector cannot be read from the registry ({exc}); only the slice classifier ran.")
        return None
    if detector is None:
        st.caption("No nodule detector is registered: only the slice classifier ran on this series.")
        return None
    stored = service.stored_nodules(analysis, detector, series)
    if stored is not None:
        _keep_findings(analysis, stored)
        return stored
    if not st.button("Find nodules with AI", key="find_nodules",
                     help=f"Scan this series with the nodule detector {detector.model_id} (once; the result is "
                          "stored with this analysis)."):
        st.caption(f"The nodule detector {detector.model_id} has not scanned this analysis yet.")
        return None
    with st.status("Scanning for nodules...", expanded=True) as status:
        found = _scan(analysis, series, user, st.progress(0.0, text="nodule detector"))
        status.update(label="Nodule scan finished", state="complete", expanded=False)
    return found


def _reader_nodules(findings: NoduleFindings, user_id: int, *, fresh: bool = False) -> ReaderNodules:
    """The reader's current nodule read, kept in the session until one of their writes changes it."""
    cache = _cache("_nodule_reads", 8)
    key = (findings.detection_id, int(user_id))
    if fresh or key not in cache:
        cache[key] = get_reading_service().reader_nodules(findings, int(user_id))
    return cache[key]


def _midline(analysis: Analysis, series: Series, findings: NoduleFindings) -> float:
    """Patient x of the midline (``services.nodules.midline_x_mm``), once per analysis for all sessions."""
    return shared_cache("nodule_midlines", SHARED_PICTURES).get_or_make(
        (analysis.key, findings.detection_id),
        lambda: midline_x_mm(series, sorted({f.slice_index for f in findings.findings}) or None))[0]


def _crop_uri(analysis: Analysis, series: Series, f: AiFinding) -> str:
    """PNG data URI of a finding's axial crop (``services.nodules.axial_crop``), shared by all sessions."""
    return shared_cache("nodule_crops", 4 * SHARED_PICTURES).get_or_make(
        (analysis.key, f.nodule_id),
        lambda: png_uri(axial_crop(series, f.slice_index, f.centre_voxel[1], f.centre_voxel[2], f.diameter_mm)))


def _write(action, *args, **kwargs) -> bool:
    """Run a service write from a callback; a refusal becomes the panel's message. True when it was recorded."""
    try:
        action(*args, **kwargs)
    except (ValidationError, PermissionDenied, NotFoundError) as exc:
        st.session_state["_nodule_msg"] = ("error", str(exc))
        return False
    return True


def _refresh(findings: NoduleFindings) -> None:
    _reader_nodules(findings, current_user().id, fresh=True)


def _on_pick(findings: NoduleFindings) -> None:
    """The selector "Finding" changed: move the viewer to its slice and clear the decision form."""
    pick = st.session_state.get("nodule_pick")
    if pick is None:
        return
    st.session_state["slice_no"] = findings.finding(pick).slice_index + 1
    for k in ("nodule_decision", "nodule_type", "nodule_diameter"):
        st.session_state.pop(k, None)


def _apply_table_pick(findings: NoduleFindings) -> None:
    """A row chosen in the findings table (previous interaction): choose that finding and move to its slice."""
    state = st.session_state.get("findings_table")
    try:
        rows = list(state["selection"]["rows"]) if state else []
    except (KeyError, TypeError):
        rows = []
    page = int(st.session_state.get("findings_page", 1) or 1)
    token = (page, rows[0]) if rows else None
    if token is None or token == st.session_state.get("_table_pick"):
        if token is None:
            st.session_state.pop("_table_pick", None)
        return
    st.session_state["_table_pick"] = token
    i = (page - 1) * FINDINGS_PER_PAGE + int(rows[0])
    if 0 <= i < len(findings.findings):
        st.session_state["nodule_pick"] = findings.findings[i].nodule_id
        _on_pick(findings)


def _remember_click(click: Click) -> None:
    """A click on the image: the centre of a nodule to add (the add form shows it)."""
    st.session_state["add_slice"] = click.slice_index + 1
    st.session_state["add_y"] = click.row
    st.session_state["add_x"] = click.col
    st.session_state["_nodule_msg"] = ("info", f"Clicked slice {click.slice_index + 1}, x {click.col}, y "
                                               f"{click.row}: give a diameter and press Add nodule.")


def _save_decision(findings: NoduleFindings) -> None:
    user, pick = current_user(), st.session_state.get("nodule_pick")
    decision = st.session_state.get("nodule_decision")
    if pick is None or decision is None:
        st.session_state["_nodule_msg"] = ("error", "Choose a finding and your decision (Accept or Reject) first.")
        return
    kind = st.session_state.get("nodule_type")
    diameter = st.session_state.get("nodule_diameter")
    accept = decision == "accept"
    if _write(get_reading_service().decide_nodule, findings, pick, reader_id=user.id, decision=decision,
              nodule_type=kind if accept and kind not in (None, NO_TYPE) else None,
              corrected_diameter_mm=float(diameter) if accept and diameter else None,
              opened_at=st.session_state.get("_opened_at", time.time())):
        rank = findings.finding(pick).rank
        st.session_state["_nodule_msg"] = ("success", f"Finding {rank}: {decision}ed"
                                           + (f", {float(diameter):.1f} mm" if accept and diameter else "") + ".")
    _refresh(findings)


def _withdraw(findings: NoduleFindings, read_id: int, what: str) -> None:
    user = current_user()
    if _write(get_reading_service().withdraw_nodule, read_id, reader_id=user.id,
              opened_at=st.session_state.get("_opened_at", time.time())):
        st.session_state["_nodule_msg"] = ("success", f"{what}: withdrawn (kept in the history).")
    _refresh(findings)


def _add(findings: NoduleFindings, ref: SeriesRef) -> None:
    user = current_user()
    diameter = st.session_state.get("add_diameter")
    if not diameter:
        st.session_state["_nodule_msg"] = ("error", "Give the nodule's diameter in mm before adding it.")
        return
    kind = st.session_state.get("add_type")
    service = get_reading_service()
    try:
        added = service.add_nodule(
            findings, load_series(ref), reader_id=user.id, slice_index=int(st.session_state.get("add_slice", 1)) - 1,
            row=int(st.session_state.get("add_y", 0)), col=int(st.session_state.get("add_x", 0)),
            diameter_mm=float(diameter), nodule_type=None if kind in (None, NO_TYPE) else kind,
            opened_at=st.session_state.get("_opened_at", time.time()))
    except (ValidationError, PermissionDenied, NotFoundError) as exc:
        st.session_state["_nodule_msg"] = ("error", str(exc))
    else:
        where = " outside the lung mask (kept, flagged)" if added.outside_lung else ""
        st.session_state["_nodule_msg"] = ("success", f"Nodule added on slice {added.centre_voxel[0] + 1}{where}.")
        st.session_state.pop("add_diameter", None)
    _refresh(findings)


def _save_lungrads(findings: NoduleFindings, suggested: str) -> None:
    user = current_user()
    category = st.session_state.get("lungrads_category")
    if _write(get_reading_service().save_lungrads, findings, reader_id=user.id, category=category,
              suggested=suggested, opened_at=st.session_state.get("_opened_at", time.time())):
        st.session_state["_nodule_msg"] = ("success", f"Lung-RADS {category} saved with your read.")
    _refresh(findings)


def _circles(findings: NoduleFindings, read: ReaderNodules) -> tuple[list[Circle], list[Circle]]:
    """(circles always drawn: the chosen finding and the reader's own nodules, every candidate's circle)."""
    pick = st.session_state.get("nodule_pick")
    chosen, every = [], []
    for f in findings.findings:
        state = read.state_of(f.nodule_id)
        status = state.status if state is not None else "undecided"
        diameter = state.diameter_mm if state is not None else f.diameter_mm
        circle = Circle(f.slice_index, f.centre_voxel[1], f.centre_voxel[2], diameter, label=str(f.rank),
                        colour=STATUS_COLOURS[status], dash="dash" if status == "rejected" else "solid")
        every.append(circle)
        if f.nodule_id == pick:
            chosen.append(Circle(f.slice_index, f.centre_voxel[1], f.centre_voxel[2], diameter, label=str(f.rank),
                                 colour=CHOSEN_COLOUR))
    for i, st_ in enumerate(read.added, start=1):
        own = Circle(st_.slice_index, st_.centre_voxel[1], st_.centre_voxel[2], st_.diameter_mm, label=f"R{i}",
                     colour=STATUS_COLOURS["added"])
        chosen.append(own)
        every.append(own)
    return chosen, every


def findings_panel(ref: SeriesRef, series: Series, analysis: Analysis, findings: NoduleFindings,
                   read: ReaderNodules) -> None:
    """The findings table and the reader's per-nodule read: decisions, added nodules, Lung-RADS."""
    st.subheader("Nodule findings")
    st.caption(f"{findings.model_id} · operating point p(nodule) ≥ "
               f"{findings.operating_point if findings.operating_point is not None else '?'} · "
               f"{findings.latency_ms / 1000:.1f} s" + (" · stored result" if findings.reused else ""))
    for w in findings.warnings:
        st.caption(w)
    msg = st.session_state.pop("_nodule_msg", None)
    if msg:
        getattr(st, msg[0])(msg[1])
    n = len(findings.findings)
    if n == 0:
        st.info("No nodule candidates above the operating point.")
    else:
        midline = _midline(analysis, series, findings)
        pages = (n + FINDINGS_PER_PAGE - 1) // FINDINGS_PER_PAGE
        page = 1
        if pages > 1:
            page = int(st.number_input(f"Findings page (of {pages})", 1, pages, 1, key="findings_page"))
        shown = findings.findings[(page - 1) * FINDINGS_PER_PAGE: page * FINDINGS_PER_PAGE]
        sub = dataclasses.replace(findings, findings=shown)
        table = findings_table(sub, read, midline, [_crop_uri(analysis, series, f) for f in shown])
        st.dataframe(table, hide_index=True, key="findings_table", on_select="rerun", selection_mode="single-row",
                     column_config={"crop": st.column_config.ImageColumn("crop", width="small"),
                                    "rank": st.column_config.NumberColumn("rank", width="small"),
                                    "slice": st.column_config.NumberColumn("slice", width="small"),
                                    "side": st.column_config.TextColumn("side", width="small")},
                     row_height=48)
        st.caption(f"{n} finding(s)" + (f", {FINDINGS_PER_PAGE} per page" if pages > 1 else "")
                   + ". Choose a row (or a finding below) to go to its slice; side: left / right of the patient "
                     "(LPS: +x is the patient's left) against the lung mask's midline.")
        ids = [f.nodule_id for f in findings.findings]
        sides = {f.nodule_id: side_of(f.centre_mm[0], midline) for f in findings.findings}
        pick = st.selectbox("Finding", ids, index=None, key="nodule_pick", placeholder="choose a finding",
                            format_func=lambda i: finding_label(findings.finding(i), sides[i]),
                            on_change=_on_pick, args=(findings,))
        if pick is not None:
            _decision_form(findings, read, pick)
    _add_section(ref, series, findings, read)
    _lungrads_section(findings, read)


def _decision_form(findings: NoduleFindings, read: ReaderNodules, pick: int) -> None:
    f = findings.finding(pick)
    state = read.state_of(pick)
    now = state.status if state is not None else "undecided"
    st.caption(f"Finding {f.rank}: AI diameter {f.diameter_mm:.1f} mm, p(nodule) {f.p_nodule:.2f}, malignancy "
               f"{f.malignancy:.1f} of 5 · your read: **{now}**"
               + (f" ({state.nodule_type})" if state is not None and state.nodule_type else ""))
    with st.form("nodule_decision_form", border=True):
        st.radio("Your decision", ["accept", "reject"], index=None, horizontal=True, key="nodule_decision",
                 format_func=str.capitalize)
        c1, c2 = st.columns(2)
        c1.selectbox("Type", [NO_TYPE, *(t.value for t in NoduleType)], key="nodule_type",
                     help="With Accept: the attenuation type (Lung-RADS treats each type differently).")
        c2.number_input("Corrected diameter (mm)", min_value=0.5, max_value=100.0, value=None, step=0.5,
                        key="nodule_diameter", help="With Accept: your own diameter, when the AI's is off.")
        st.form_submit_button("Save decision", key="nodule_save", type="primary", on_click=_save_decision,
                              args=(findings,))
    if state is not None and state.read_id is not None:
        st.button("Withdraw my decision", key="nodule_withdraw", on_click=_withdraw,
                  args=(findings, state.read_id, f"Finding {f.rank}"))


def _add_section(ref: SeriesRef, series: Series, findings: NoduleFindings, read: ReaderNodules) -> None:
    st.markdown("**Add a nodule the AI missed**")
    st.caption("Click its centre on the slice (the fields below fill in), or type the slice and pixel; give a "
               "diameter. A centre outside the lungs is kept and flagged.")
    n = len(series.slices)
    rows, cols = series.slices[0].hu.shape
    # defaults through the session state (a click sets them too): no widget gets both
    st.session_state.setdefault("add_slice", min(max(int(st.session_state.get("slice_no", 1)), 1), n))
    st.session_state.setdefault("add_x", cols // 2)
    st.session_state.setdefault("add_y", rows // 2)
    c1, c2, c3 = st.columns(3)
    c1.number_input("Slice (add)", 1, n, key="add_slice")
    c2.number_input("x (column)", 0, cols - 1, key="add_x")
    c3.number_input("y (row)", 0, rows - 1, key="add_y")
    c4, c5 = st.columns(2)
    c4.number_input("Diameter (mm)", min_value=0.5, max_value=100.0, value=None, step=0.5, key="add_diameter")
    c5.selectbox("Type (add)", [NO_TYPE, *(t.value for t in NoduleType)], key="add_type")
    st.button("Add nodule", key="add_nodule", on_click=_add, args=(findings, ref))
    for i, st_ in enumerate(read.added, start=1):
        a1, a2 = st.columns([4, 1])
        flag = " · outside the lung mask" if st_.outside_lung else ""
        a1.caption(f"R{i}: slice {st_.slice_index + 1}, x {st_.centre_voxel[2]}, y {st_.centre_voxel[1]}, "
                   f"{st_.diameter_mm:.1f} mm" + (f", {st_.nodule_type}" if st_.nodule_type else "") + flag)
        a2.button("Remove", key=f"remove_added_{st_.read_id}", on_click=_withdraw,
                  args=(findings, st_.read_id, f"Nodule R{i}"))


def _lungrads_section(findings: NoduleFindings, read: ReaderNodules) -> None:
    suggestion = read.suggestion
    st.markdown("**Lung-RADS**")
    st.info(f"Suggested Lung-RADS {suggestion.category.value}: {suggestion.explanation}.")
    st.caption(CAVEAT)
    options = [c.value for c in LungRads]
    if st.session_state.get("lungrads_category") not in options:
        st.session_state["lungrads_category"] = read.lungrads or suggestion.category.value
    c1, c2 = st.columns([2, 1])
    c1.selectbox("Your Lung-RADS category", options, key="lungrads_category")
    c2.button("Save Lung-RADS", key="lungrads_save", on_click=_save_lungrads,
              args=(findings, suggestion.category.value))
    if read.lungrads:
        st.caption(f"Saved: Lung-RADS {read.lungrads} (the suggestion then: {read.lungrads_suggested or 'none'}).")


@st.fragment
def reading_view(ref: SeriesRef, analysis: Analysis, threshold: float | None,
                 findings: NoduleFindings | None) -> None:
    """The viewer and, beside it, the findings panel: one fragment, so a slice move, a window, a row,
    a decision or an added nodule reruns only this part of the page."""
    series = load_series(ref)
    if findings is None or findings.refused:
        if findings is not None:
            st.info(f"Nodule detector: {findings.refusal}")
        slice_viewer(series, analysis, threshold=threshold)
        return
    user = current_user()
    _apply_table_pick(findings)
    read = _reader_nodules(findings, user.id)
    circles, every = _circles(findings, read)
    left, right = st.columns([3, 2])
    with left:
        slice_viewer(series, analysis, threshold=threshold, circles=circles, all_circles=every,
                     on_click=_remember_click, stacked=True)
    with right:
        findings_panel(ref, series, analysis, findings, read)


def review_form(analysis: Analysis) -> None:
    """The reader's own read; stored with the seconds since the AI result was first shown."""
    st.subheader("Your read")
    saved = st.session_state.get("_saved_review")
    if saved:
        st.success(saved)
    user = st.session_state["user"]
    with st.form("review_form"):
        finding = st.radio("Your finding", [f.value for f in Finding], index=None, horizontal=True,
                           key="review_finding", format_func=str.capitalize)
        agreement = st.radio("Do you agree with the AI?", [a.value for a in Agreement], index=None, horizontal=True,
                             key="review_agreement", format_func=str.capitalize)
        confidence = st.radio("Your confidence (1 = very unsure, 5 = certain)", [1, 2, 3, 4, 5], index=None,
                              horizontal=True, key="review_confidence")
        helpful = st.radio("Was the heatmap helpful? (1 = not at all, 5 = very)", ["not used", 1, 2, 3, 4, 5],
                           index=None, horizontal=True, key="review_heatmap")
        comment = st.text_area("Comment (no patient identifiers)", key="review_comment", max_chars=5000)
        submitted = st.form_submit_button("Save my read", key="review_submit", type="primary")
    if not submitted:
        return
    missing = [name for name, v in (("finding", finding), ("agreement", agreement), ("confidence", confidence))
               if v is None]
    if missing:
        st.error("Please choose your " + ", ".join(missing) + " before saving.")
        return
    saved = get_reading_service().save_read(
        analysis.inference_id, reader_id=user.id, finding=finding, agreement=agreement, confidence=int(confidence),
        heatmap_helpful=None if helpful in (None, "not used") else int(helpful), comment=comment,
        opened_at=st.session_state.get("_opened_at", time.time()))
    st.session_state["_saved_review"] = (
        f"Read saved (review {saved.review_id}, {saved.seconds_to_decision:.0f} s after the AI result was shown). "
        "Saving again replaces your read; the earlier one stays in the history.")
    st.success(st.session_state["_saved_review"])


def _staged_upload() -> StagedUpload | None:
    """The upload widget and, by reference, what the upload held; None while it is empty.

    An upload is read and staged once (``services.reading.stage``); the session keeps the references
    of the last two uploads, never their pixels.
    """
    limit = upload_limit_mb()
    files = st.file_uploader("Upload DICOM files, a ZIP or JPG/PNG slices", accept_multiple_files=True,
                             key="upload", help="A whole series: all its DICOM files, or one ZIP.")
    st.caption(f"Up to {limit} MB per file; a ZIP may expand to {get_settings().max_zip_mb} MB. "
               "The files themselves are not kept: LungReview keeps a pseudonymous study key and, in its "
               "study store, the decoded de-identified slices (evicted when the store is full).")
    if not files:
        return None
    ident = _upload_ident(files)
    staged = _cache("_staged", 2)
    if ident not in staged:
        items = [(f.name, f.getvalue()) for f in files]
        with st.spinner(f"Reading {len(items)} file(s)..."):
            staged[ident] = stage(read_upload(items, limit))
        del items
        release_memory()  # the read's temporary copies (file bytes, datasets, HU) back to the system
    return staged[ident]


def case_from_link() -> tuple[StudyRef, SeriesRef] | None:
    """The case named in the address (``?case=<series id>``), opened from the study store.

    Returns:
        (study, series) references, or None when the address names none, or names one the
        store no longer holds (the page then says so).
    """
    raw = st.query_params.get("case")
    if not raw:
        return None
    try:
        series_id = int(raw)
    except ValueError:
        st.warning(f"The address names case {raw!r}, which is not a case number; open a case from the worklist.")
        return None
    opened = _cache("_opened", 4)
    if series_id not in opened:
        try:
            got = get_reading_service().open_case(series_id)
        except NotFoundError:
            st.warning(f"Case {series_id} does not exist; open a case from the worklist.")
            return None
        if got is None:
            st.warning(f"The images of case {series_id} are no longer in the study store (it keeps the most "
                       "recently used series up to its size limit); upload the study's files again.")
            return None
        opened[series_id] = got
    return opened[series_id]


def choose_series(staged: StagedUpload) -> tuple[StudyRef, SeriesRef]:
    """The study and series selectors (shown when the upload holds more than one)."""
    studies = staged.studies
    study = studies[0]
    if len(studies) > 1:
        pick = st.selectbox("Study", range(len(studies)), key="study_pick",
                            format_func=lambda i: f"Study {studies[i].study_key[:12]} · {len(studies[i].series)} series")
        study = studies[pick]
    ref = study.series[0]
    if len(study.series) > 1:
        pick = st.selectbox("Series", range(len(study.series)), key="series_pick",
                            format_func=lambda i: f"{study.series[i].description or 'series'} · "
                            f"{study.series[i].n_slices} slices · {study.series[i].modality}")
        ref = study.series[pick]
    return study, ref


def body(user: SessionUser) -> None:
    """The read-a-study page."""
    from_pacs = pacs.choose_source() == pacs.SOURCE_PACS
    staged = pacs.read_from_pacs() if from_pacs else _staged_upload()
    if staged is not None:
        show_problems(list(staged.problems))
        if not staged.studies:
            return
        study, ref = choose_series(staged)
    else:
        opened = None if from_pacs else case_from_link()
        if opened is None:
            if not from_pacs:
                st.info("Upload a study to start: DICOM files of one or more series, a ZIP of them, or JPG/PNG "
                        "slices. Earlier cases open from the worklist without their files.")
            return
        study, ref = opened
        st.caption(f"Case {st.query_params.get('case')} opened from the study store; upload files above to read "
                   "another study.")
    try:
        series = load_series(ref)
    except CaseGoneError as exc:
        st.warning(str(exc))
        return
    sz, sy, sx = series.spacing_mm
    if sz is None and sy is None and sx is None:
        spacing = "spacing unknown (pictures carry none)"
    else:
        spacing = "spacing (z, y, x) " + " x ".join("?" if v is None else f"{v:.2f}" for v in (sz, sy, sx)) + " mm"
    st.caption(f"{series.modality} · {series.source_kind.upper()} · {len(series.slices)} slice(s) · "
               f"{spacing} · study key {study.study_key[:12]}")
    card = choose_model()
    if card is None:
        return
    key = analysis_key(study, series, card)
    analyses = _cache("_analyses", 8)
    service = get_reading_service()
    if key not in analyses:
        stored = service.stored_analysis(study, series, card)
        if stored is not None:
            analyses[key] = stored
    if key not in analyses:
        slot = st.empty()  # the button, then the status box in its place: one run shows the result
        if not slot.button("Analyse with AI", key="analyse", type="primary"):
            return
        with slot.container(), st.status(f"Analysing {len(series.slices)} slice(s) with {card.id}...",
                                         expanded=True) as status:
            bar = st.progress(0.0, text="loading the model")
            analyses[key] = service.analyse(study, series, card, user_id=user.id, progress=_progress_callback(bar))
            status.update(label=f"Analysed {len(series.slices)} slice(s) with {card.id}; scanning for nodules...")
            found = _scan(analyses[key], series, user, bar)
            if found is None:
                scanned = ""
            elif found.refused:
                scanned = "; the nodule detector refused the series"
            else:
                scanned = f"; nodule detector: {len(found.findings)} finding(s)"
            status.update(label=f"Analysed {len(series.slices)} slice(s) with {card.id}{scanned}", state="complete",
                          expanded=False)
        release_memory()
    analysis = analyses[key]
    if st.query_params.get("case") != str(analysis.series_id):
        st.query_params["case"] = str(analysis.series_id)  # a reload or a new tab opens this case again
    _reset_case(key, analysis)
    show_result(series, analysis)
    findings = nodule_findings(analysis, series, user)
    threshold = analysis.threshold if suspicious_class(analysis.class_names) in card.thresholds else None
    reading_view(ref, analysis, threshold, findings)
    review_form(analysis)
    read = None
    if findings is not None and not findings.refused:
        read = NoduleExport(findings, _reader_nodules(findings, user.id))
    pacs.export_section(user, series, analysis, nodules=read)


if __name__ == "__main__":
    run_page(body, roles=READ_ROLES, title="Read a study", what="read studies")
