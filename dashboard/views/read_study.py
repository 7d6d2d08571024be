"""Read a study (radiologists, admins): upload, AI result, slice viewer with Grad-CAM, own read.

Flow: upload DICOM files / a ZIP / JPG or PNG slices -> ``core.imaging.read_uploads`` (bad files
are listed, good ones read) -> pick study and series -> pick a model (default preselected) ->
"Analyse with AI" (``services.reading.ReadingService.analyse``: a series uploaded before is recognised
by its content hash and series key, and the stored inference of the same model file is reused;
the service owns every database transaction of this page) -> series
result, per-slice malignancy chart (click a point or use the slider), slice with window presets
and Grad-CAM overlay -> the reader's own read (form). Time to decision runs from the first display
of the AI result to "Save my read".

Keys, not volumes: a read upload is staged (``services.reading.stage``: its series go to the study store
and the server's shared memory cache) and the browser session keeps only references; Grad-CAM
heatmaps, overlay pictures and lung masks sit in caches shared by all sessions
(``dashboard.resources.shared_cache``). The analysed series is in the address (``?case=<series
id>``): a reload, a new tab or the worklist's "Open case" opens it from the study store without
its files.

Browser: file input "Upload DICOM files, a ZIP or JPG/PNG slices"; selectors "Study", "Series",
"Model"; button "Analyse with AI" (then "AI result" metric appears); chart, slider "Slice",
button "Go to most suspicious slice"; radio "Window" (Lung, Mediastinum, Bone, File's own,
IQ-OTH/NCCD export); checkboxes "Show Grad-CAM heatmap" and "Show lung outline", slider "Heatmap opacity", selector
"Heatmap class"; form with radios "Your finding", "Do you agree with the AI?",
"Your confidence", "Was the heatmap helpful?", text area "Comment", button "Save my read"
(success text starts with "Read saved").
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st
from cachetools import LRUCache

from core.domain import WINDOW_PRESETS, Agreement, Finding, Window, WindowPreset, suspicious_class
from core.imaging import Series, view
from core.registry import ModelCard, RegistryError, default_model_id, get_card, list_cards
from core.settings import get_settings
from dashboard.components import READ_ROLES, SessionUser, run_page, show_problems, slice_score_figure
from dashboard.resources import get_reading_service, gradcam_heatmap, release_memory, shared_cache
from dashboard.views import pacs
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

PRESET_LABELS: dict[str, str] = {
    WindowPreset.LUNG.value: "Lung (C -600 / W 1500)",
    WindowPreset.MEDIASTINUM.value: "Mediastinum (C 50 / W 350)",
    WindowPreset.BONE.value: "Bone (C 500 / W 2000)",
    WindowPreset.DICOM.value: "File's own",
    WindowPreset.IQ_OTHNCCD.value: "IQ-OTH/NCCD export",
}
REVIEW_KEYS = ("review_finding", "review_agreement", "review_confidence", "review_heatmap", "review_comment")
#: Overlay PNGs and lung masks kept for all sessions together (a few hundred KB each).
SHARED_PICTURES = 128


# ------------------------------------------------------------------------------- pure helpers
def upload_limit_mb() -> int:
    """Per-file upload limit in MB: the smaller of ``server.maxUploadSize`` and the settings'."""
    try:
        server = int(st.get_option("server.maxUploadSize"))
    except (RuntimeError, ValueError, TypeError):
        server = get_settings().max_upload_mb
    return min(server, get_settings().max_upload_mb)


def window_options(series: Series | SeriesRef) -> list[str]:
    """Window presets offered for a series (the file's own only when it has one)."""
    opts = [WindowPreset.LUNG.value, WindowPreset.MEDIASTINUM.value, WindowPreset.BONE.value]
    if series.source_kind == "dicom" and series.windows:
        opts.append(WindowPreset.DICOM.value)
    opts.append(WindowPreset.IQ_OTHNCCD.value)
    return opts


def window_for(preset: str, series: Series) -> Window:
    """The ``Window`` (centre/width in HU) of a preset; "dicom" = the series' first own window."""
    if preset == WindowPreset.DICOM.value and series.windows:
        return series.windows[0]
    return WINDOW_PRESETS[WindowPreset(preset)]


def ood_summary(analysis: Analysis) -> str:
    """How many slices the guard flagged and its distinct reasons, as one sentence."""
    flagged = int(np.sum(analysis.ood))
    reasons = sorted({r for text in analysis.ood_reasons for r in str(text).split("; ") if r})
    text = f"{flagged} of {len(analysis.ood)} slice(s) flagged"
    return text + (": " + "; ".join(reasons) + "." if reasons else ".")


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
    for k in (*REVIEW_KEYS, "_last_chart_pick", "_saved_review"):
        st.session_state.pop(k, None)
    st.session_state["slice_no"] = analysis.most_suspicious_index + 1
    st.session_state["_opened_at"] = time.time()


def _apply_chart_pick(n: int) -> None:
    """Move to the slice clicked on the chart (selection state from the previous interaction)."""
    state = st.session_state.get("slice_chart")
    points = []
    try:
        points = list(state["selection"]["points"]) if state else []
    except (KeyError, TypeError):
        points = []
    pick = int(round(points[0]["x"])) if points and points[0].get("x") is not None else None
    if pick is not None and pick != st.session_state.get("_last_chart_pick"):
        st.session_state["_last_chart_pick"] = pick
        st.session_state["slice_no"] = min(max(pick, 1), n)


def _go_to_suspicious(index: int) -> None:
    st.session_state["slice_no"] = index + 1


def show_result(series: Series, analysis: Analysis, card: ModelCard) -> None:
    """Series result, chart, slice viewer with Grad-CAM, and the review form."""
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

    _apply_chart_pick(n)
    current = int(st.session_state.get("slice_no", analysis.most_suspicious_index + 1))
    has_threshold = suspicious_class(analysis.class_names) in card.thresholds
    fig = slice_score_figure(analysis.probabilities[:, pos], current=current - 1,
                             suspicious=analysis.most_suspicious_index,
                             threshold=analysis.threshold if has_threshold else None,
                             ood=analysis.ood, score_name=analysis.class_names[pos])
    st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="slice_chart")
    nav1, nav2 = st.columns([4, 1])
    if n > 1:
        nav1.slider("Slice", 1, n, key="slice_no", help="or click a point on the chart")
    nav2.button("Go to most suspicious slice", key="goto_suspicious", on_click=_go_to_suspicious,
                args=(analysis.most_suspicious_index,))
    index = int(st.session_state.get("slice_no", 1)) - 1 if n > 1 else 0
    show_slice(series, analysis, card, index)
    review_form(analysis)


def show_slice(series: Series, analysis: Analysis, card: ModelCard, index: int) -> None:
    """One slice in the chosen window, its probabilities, and the Grad-CAM overlay."""
    options = window_options(series)
    if st.session_state.get("window_preset") not in options:
        st.session_state["window_preset"] = (WindowPreset.LUNG.value if series.source_kind == "dicom"
                                             else WindowPreset.IQ_OTHNCCD.value)
    preset = st.radio("Window", options, horizontal=True, key="window_preset",
                      format_func=lambda v: PRESET_LABELS.get(v, v))
    window = window_for(preset, series)
    sl = series.slices[index]
    picture = view(sl.hu, window)
    g1, g2, g3 = st.columns([1, 1, 2])
    show_cam = g1.checkbox("Show Grad-CAM heatmap", value=True, key="gradcam_on")
    outline = False
    if g1.checkbox("Show lung outline", value=False, key="lung_outline_on",
                   help="The lung field found by the HU pipeline of core.lungs (Hu et al. 2001), drawn "
                        "over the slice; on JPG/PNG slices it follows estimated HU and is rough."):
        picture = with_lung_outline(series, analysis, index, picture)
        outline = True
    alpha = g2.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="gradcam_opacity")
    classes = list(analysis.class_names)
    default_cls = analysis.labels[index] if index < len(analysis.labels) and analysis.labels[index] in classes \
        else classes[analysis.suspicious_index]
    cam_class = g3.selectbox("Heatmap class", classes, index=classes.index(default_cls), key="gradcam_class")
    left, right = st.columns(2)
    caption = f"Slice {index + 1} of {len(series.slices)} · {sl.source} · C {window.center:g} / W {window.width:g} HU"
    left.image(picture, caption=caption, width="stretch", clamp=True)
    with right:
        if show_cam:
            overlay_png = explanation_png(series, analysis, index, cam_class, picture, alpha,
                                          view_key=(window.center, window.width, outline))
            if overlay_png is not None:
                st.image(overlay_png, caption=f"Grad-CAM for '{cam_class}' (opacity {alpha:.2f})", width="stretch")
        probs = pd.DataFrame({"class": classes, "probability": analysis.probabilities[index].round(3)})
        st.dataframe(probs, hide_index=True, key="slice_probabilities")
        lbl = analysis.labels[index] if index < len(analysis.labels) else "?"
        flag = " · out of distribution" if bool(analysis.ood[index]) else ""
        st.caption(f"AI label of this slice: {lbl}{flag}")
    if series.hu_is_estimated:
        st.caption("HU are estimated from the picture's grey values (JPG/PNG exports carry no HU).")


def with_lung_outline(series: Series, analysis: Analysis, index: int, picture: np.ndarray) -> np.ndarray:
    """The displayed view with the lung-field outline drawn on it (mask cached per slice).

    Args:
        picture: uint8 (y, x) grey view of slice ``index``.

    Returns:
        uint8 (y, x, 3) RGB view; the outline (``core.lungs.lung_outline_rgba``) replaces the grey
        where it is drawn. An empty mask (no lungs found) returns the view unchanged, as RGB.
    """
    from core.lungs import lung_mask, lung_outline_rgba

    mask = shared_cache("lung_masks", SHARED_PICTURES).get_or_make(
        (analysis.key, index), lambda: lung_mask(series.slices[index].hu, series.spacing_mm))
    outline = lung_outline_rgba(mask, width=2)
    rgb = np.repeat(np.asarray(picture, dtype=np.uint8)[..., None], 3, axis=2)
    drawn = outline[..., 3] > 0
    rgb[drawn] = outline[drawn, :3]
    return rgb


def explanation_png(series: Series, analysis: Analysis, index: int, cls: str, picture: np.ndarray,
                    alpha: float, view_key: tuple = ()) -> bytes | None:
    """PNG of the Grad-CAM overlay on the displayed view.

    The heatmap is computed once per analysis, slice and class
    (``dashboard.resources.gradcam_heatmap``); the PNG once per heatmap, opacity and ``view_key``
    (what made ``picture``: window, outline), both shared by all sessions.
    """
    from core.inference.explain import overlay, to_png

    def make() -> bytes:
        with st.spinner(f"Computing Grad-CAM for slice {index + 1}..."):
            heat = gradcam_heatmap(analysis, series, index, cls)
        return to_png(overlay(picture, heat, alpha=alpha))

    key = (analysis.key, index, cls, round(float(alpha), 3), view_key)
    return shared_cache("overlay_png", SHARED_PICTURES).get_or_make(key, make)


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
        from services.database import NotFoundError

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
        if not st.button("Analyse with AI", key="analyse", type="primary"):
            return
        with st.status(f"Analysing {len(series.slices)} slice(s) with {card.id}...", expanded=True) as status:
            bar = st.progress(0.0, text="loading the model")
            analyses[key] = service.analyse(study, series, card, user_id=user.id, progress=_progress_callback(bar))
            status.update(label=f"Analysed {len(series.slices)} slice(s) with {card.id}", state="complete",
                          expanded=False)
        release_memory()
        st.query_params["case"] = str(analyses[key].series_id)
        st.rerun()  # show the result without the finished button and status box
    analysis = analyses[key]
    if st.query_params.get("case") != str(analysis.series_id):
        st.query_params["case"] = str(analysis.series_id)  # a reload or a new tab opens this case again
    _reset_case(key, analysis)
    show_result(series, analysis, card)
    pacs.export_section(user, series, analysis)


if __name__ == "__main__":
    run_page(body, roles=READ_ROLES, title="Read a study", what="read studies")
