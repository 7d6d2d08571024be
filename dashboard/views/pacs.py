"""Page sections of "Read a study" for the PACS: the study source, the PACS search, the DICOM export.

Not a page of its own (``dashboard/app.py`` does not list it): ``read_study`` calls

* :func:`choose_source` - radio "Source" ("Upload files" / "From PACS"), shown only when
  ``LUNGREVIEW_DICOMWEB_URL`` is set;
* :func:`read_from_pacs` - form "Search the PACS" (text inputs "Patient ID or name",
  "Accession number", date inputs "Studies from" / "to", button "Search PACS"), the results table
  (test id ``pacs_results``), selectors "PACS study" and "PACS series", button "Retrieve series"
  with a progress bar; it returns the same ``services.reading.StagedUpload`` an upload gives;
* :func:`export_section` - subheader "DICOM export", number input "Slice for the Secondary
  Capture", button "Prepare DICOM export" (builds the objects, so reading a study costs nothing
  extra until an export is wanted), then buttons "Download DICOM" (ZIP of SC + SR) and "Send to
  PACS" (STOW-RS; success text starts with "Sent to the PACS"). Each download or send is an "export" audit event
  (``services.export.record_export``).

What the PACS returns from a search, and the pixel-free headers of a retrieved or uploaded series
(the study's real identity, needed to send results back into that study), live in
``st.session_state`` for the browser session only; the database keeps pseudonymous keys, as for
uploads. Credentials come from the environment or ``.streamlit/secrets.toml`` and are passed to
``core.dicomweb.PacsClient`` only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import streamlit as st

from core.config import WINDOW_PRESETS, WindowPreset, get_settings
from core.decision import suspicious_index
from core.dicomweb import PacsClient, PacsError, RetrievedSeries
from core.imaging import ImagingError, Series, view
from dashboard.components import SessionUser
from dashboard.resources import get_session_factory, gradcam_heatmap
from services.export import record_export
from services.reading import Analysis, StagedUpload, stage

if TYPE_CHECKING:  # core.export imports highdicom (about 2 s): loaded when an export is shown
    from core.export import AIResult, ReaderRead

SOURCE_UPLOAD = "Upload files"
SOURCE_PACS = "From PACS"


# ------------------------------------------------------------------------------------ helpers
def enabled() -> bool:
    """True when a PACS is configured (``LUNGREVIEW_DICOMWEB_URL``)."""
    return bool(get_settings().dicomweb_url)


def _secret(name: str) -> str | None:
    """A credential from the environment, else from Streamlit secrets; None when neither has it."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        value = st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets.toml is the usual case, not an error
        return None
    return str(value) if value else None


def client() -> PacsClient:
    """A client for the configured PACS with the configured credentials."""
    return PacsClient(get_settings().dicomweb_url or "", _secret("LUNGREVIEW_DICOMWEB_USER"),
                      _secret("LUNGREVIEW_DICOMWEB_PASSWORD"))


def _cache(name: str, size: int) -> OrderedDict:
    cache = st.session_state.setdefault(name, OrderedDict())
    while len(cache) > size:
        cache.popitem(last=False)
    return cache


# ------------------------------------------------------------------------------------- source
def choose_source() -> str:
    """Radio "Source" when a PACS is configured; :data:`SOURCE_UPLOAD` otherwise."""
    if not enabled():
        return SOURCE_UPLOAD
    return st.radio("Source", [SOURCE_UPLOAD, SOURCE_PACS], horizontal=True, key="study_source")


def _results_table(hits: list) -> pd.DataFrame:
    return pd.DataFrame({
        "date": [h.study_date.isoformat() if h.study_date else "" for h in hits],
        "patient ID": [h.patient_id for h in hits],
        "patient name": [h.patient_name for h in hits],
        "accession": [h.accession_number for h in hits],
        "modality": [", ".join(h.modalities) for h in hits],
        "description": [h.description for h in hits],
        "series": [h.n_series for h in hits],
        "instances": [h.n_instances for h in hits],
    })


def read_from_pacs() -> StagedUpload | None:
    """Search the PACS, choose a study and series, retrieve it; None until a series is retrieved.

    The retrieved series goes to the study store (``services.reading.stage``); the session keeps its
    reference and the pixel-free headers (for the DICOM export).

    Errors (PACS unreachable, authentication refused, study gone, not CT, too large, unreadable
    instances) are shown in the page with their own message; nothing recorded is touched.
    """
    with st.form("pacs_search"):
        c1, c2 = st.columns(2)
        patient = c1.text_input("Patient ID or name", key="pacs_patient")
        accession = c2.text_input("Accession number", key="pacs_accession")
        d1, d2 = st.columns(2)
        date_from = d1.date_input("Studies from", value=None, key="pacs_from")
        date_to = d2.date_input("to", value=None, key="pacs_to")
        searched = st.form_submit_button("Search PACS", key="pacs_search_button", type="primary")
    if searched:
        try:
            st.session_state["_pacs_hits"] = client().search_studies(patient=patient, accession_number=accession,
                                                                     date_from=date_from, date_to=date_to)
        except PacsError as exc:
            st.error(str(exc))
            return None
        st.session_state.pop("_pacs_series", None)
    hits = st.session_state.get("_pacs_hits")
    if hits is None:
        st.info("Search the PACS for a CT study: patient ID or name, accession number or a date range.")
        return None
    if not hits:
        st.info("No CT study in the PACS matches this search.")
        return None
    st.caption(f"{len(hits)} CT stud{'y' if len(hits) == 1 else 'ies'} (as the PACS shows them; not stored)")
    st.dataframe(_results_table(hits), hide_index=True, key="pacs_results")
    pick = st.selectbox("PACS study", range(len(hits)), key="pacs_study",
                        format_func=lambda i: f"{hits[i].study_date or 'no date'} · {hits[i].patient_id} · "
                        f"{hits[i].description or 'study'}")
    hit = hits[min(pick or 0, len(hits) - 1)]
    listed = st.session_state.get("_pacs_series")
    if listed is None or listed[0] != hit.study_instance_uid:
        try:
            listed = (hit.study_instance_uid, client().search_series(hit.study_instance_uid))
        except PacsError as exc:
            st.error(str(exc))
            return None
        st.session_state["_pacs_series"] = listed
    series_hits = listed[1]
    spick = st.selectbox("PACS series", range(len(series_hits)), key="pacs_series",
                         format_func=lambda i: f"{series_hits[i].series_number or '?'} · {series_hits[i].modality} · "
                         f"{series_hits[i].description or 'series'} · {series_hits[i].n_instances or '?'} images")
    chosen = series_hits[min(spick or 0, len(series_hits) - 1)]
    key = (chosen.study_instance_uid, chosen.series_instance_uid)
    got = st.session_state.get("_pacs_read")
    if got is None or got[0] != key:
        if not st.button("Retrieve series", key="pacs_retrieve", type="primary"):
            return None
        bar = st.progress(0.0, text="asking the PACS")

        def progress(done: int, total: int | None) -> None:
            bar.progress(min(done / total, 1.0) if total else 0.0, text=f"image {done} of {total or '?'}")

        try:
            retrieved: RetrievedSeries = client().retrieve_series(*key, progress=progress)
        except (PacsError, ImagingError) as exc:
            bar.empty()
            st.error(str(exc))
            return None
        # one retrieved series per browser session, by reference: the pixels go to the study store
        got = (key, retrieved.headers, stage(retrieved.result))
        st.session_state["_pacs_read"] = got
        bar.empty()
    return got[2]


# ------------------------------------------------------------------------------------- export
def headers_for(series: Series) -> dict[str, Any] | None:
    """Pixel-free source headers of the series' instances (PACS retrieval, else the upload); None if none."""
    got = st.session_state.get("_pacs_read")
    if got is not None and any(s.series_key == series.series_key for study in got[2].studies for s in study.series):
        return got[1]
    files = st.session_state.get("upload") or []
    if not files:
        return None
    ident = tuple((f.name, f.size) for f in files)
    cache = _cache("_upload_headers", 1)
    if ident not in cache:
        from core.export import source_headers

        cache[ident] = source_headers([(f.name, f.getvalue()) for f in files])
        _cache("_upload_headers", 1)
    headers = cache[ident]
    wanted = {s.sop_instance_uid for s in series.slices}
    return {uid: h for uid, h in headers.items() if uid in wanted} or None


def ai_result(series: Series, analysis: Analysis) -> AIResult:
    """The export's view of an analysis (the page's analysis object: model, probabilities, ...)."""
    from core.export import AIResult

    names = list(analysis.class_names)
    index = int(analysis.most_suspicious_index)
    finding = "not applicable" if analysis.any_ood else analysis.finding.value
    probs = np.asarray(analysis.probabilities, dtype=float)[index]
    return AIResult(model_id=analysis.model_id, model_sha256=analysis.model_sha256, finding=str(finding),
                    probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
                    series_score=float(analysis.series_score), positive_class=names[suspicious_index(analysis.class_names)],
                    most_suspicious_sop_uid=str(series.slices[index].sop_instance_uid))


def _saved_read(user: SessionUser) -> ReaderRead | None:
    """The reader's read saved on this page (its form values), or None before one is saved."""
    from core.export import ReaderRead

    if not st.session_state.get("_saved_review"):
        return None
    finding, agreement = st.session_state.get("review_finding"), st.session_state.get("review_agreement")
    if not finding or not agreement:
        return None
    return ReaderRead(finding=str(finding), agreement=str(agreement), reader=user.display_name or user.username)


def _overlay(series: Series, analysis: Analysis, index: int) -> np.ndarray:
    """uint8 (y, x, 3): the lung-windowed slice with the Grad-CAM of the suspicious class."""
    from core.explain import overlay

    cls = list(analysis.class_names)[suspicious_index(analysis.class_names)]
    heatmap = gradcam_heatmap(analysis, series, index, cls)
    picture = view(series.slices[index].hu, WINDOW_PRESETS[WindowPreset.LUNG])
    return overlay(picture, np.asarray(heatmap, dtype=np.float32),
                   alpha=float(st.session_state.get("gradcam_opacity", 0.4)))


def _record(user: SessionUser, analysis: Analysis, destination: str, kinds: list[str]) -> None:
    record_export(get_session_factory(), user_id=user.id, study_id=getattr(analysis, "study_id", None),
                  destination=destination, kinds=kinds, model_id=analysis.model_id)


def _downloaded(user: SessionUser, analysis: Analysis, sr: Any) -> None:
    st.session_state.setdefault("_export_last_sr", {})[analysis.key] = sr
    _record(user, analysis, "download", ["OT", "SR"])


def export_section(user: SessionUser, series: Series, analysis: Analysis) -> None:
    """The DICOM export of the analysed series: SC of a slice + SR, download and send to the PACS.

    The SR names the reader's read once one is saved; a changed read builds a new SR (new SOP
    Instance UID) that lists the one last downloaded or sent as its predecessor.
    """
    st.subheader("DICOM export")
    if series.source_kind != "dicom":
        st.caption("JPG/PNG slices carry no DICOM identity: their result cannot be exported as DICOM.")
        return
    from core.export import ExportError, secondary_capture, structured_report, zip_of  # highdicom: ~1 s once
    headers = headers_for(series)
    if not headers:
        st.caption("The DICOM headers of this series are no longer in this session: load it again to export.")
        return
    n = len(series.slices)
    slice_no = st.number_input("Slice for the Secondary Capture", min_value=1, max_value=n,
                               value=int(analysis.most_suspicious_index) + 1, key="export_slice")
    index = int(slice_no) - 1
    read = _saved_read(user)
    bundles = _cache("_export_bundles", 4)
    bundle_key = (analysis.key, index, read)
    if bundle_key not in bundles:
        if any(k[0] == analysis.key for k in bundles):
            st.caption("The slice or your read changed since the DICOM export was prepared: prepare it again "
                       "(a new report; anything sent before stays in the PACS).")
        if not st.button("Prepare DICOM export", key="export_prepare"):
            return
        try:
            ai = ai_result(series, analysis)
            previous = st.session_state.get("_export_last_sr", {}).get(analysis.key)
            with st.spinner("Preparing the DICOM objects..."):
                sc = secondary_capture(headers[str(series.slices[index].sop_instance_uid)],
                                       _overlay(series, analysis, index), analysis.model_id)
                sr = structured_report(headers[ai.most_suspicious_sop_uid], ai, read, previous=previous)
        except (ExportError, KeyError) as exc:
            st.error(f"The DICOM export cannot be made: {exc}")
            return
        bundles[bundle_key] = (sc, sr, zip_of([sc, sr]))
        _cache("_export_bundles", 4)
    sc, sr, zipped = bundles[bundle_key]
    st.caption(f"A Secondary Capture of slice {index + 1} with the Grad-CAM heatmap and a Structured Report "
               f"of the AI result{' and your read' if read else ''}, marked unverified, in new series of this "
               "study.")
    c1, c2 = st.columns(2)
    c1.download_button("Download DICOM", data=zipped, file_name="lungreview-ai-result.zip",
                       mime="application/zip", key="export_download", on_click=_downloaded,
                       args=(user, analysis, sr))
    if not enabled():
        return
    if c2.button("Send to PACS", key="export_send"):
        try:
            stored = client().store([sc, sr])
        except PacsError as exc:
            st.error(str(exc))
            return
        st.session_state.setdefault("_export_last_sr", {})[analysis.key] = sr
        _record(user, analysis, "pacs", ["OT", "SR"])
        st.session_state["_export_sent"] = (analysis.key, f"Sent to the PACS: {len(stored)} object(s), the heatmap image (series "
                                            f"{sc.SeriesNumber}) and the report (series {sr.SeriesNumber}).")
    sent = st.session_state.get("_export_sent")
    if sent and sent[0] == analysis.key:
        st.success(sent[1])
