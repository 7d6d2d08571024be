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
  PACS" (STOW-RS; success text starts with "Sent to the PACS"). Building, sending and the "export" audit
  event of each download or send are ``services.export``'s; this module gathers input and renders.

What the PACS returns from a search, and the pixel-free headers of a retrieved or uploaded series
(the study's real identity, needed to send results back into that study), live in
``st.session_state`` for the browser session only; the database keeps pseudonymous keys, as for
uploads. Credentials come from the environment or ``.streamlit/secrets.toml`` and are passed to
``core.pacs.dicomweb.PacsClient`` only.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st
from cachetools import LRUCache

from core.imaging import ImagingError, Series
from core.pacs.dicomweb import PacsClient, PacsError, RetrievedSeries
from core.settings import get_settings
from dashboard.components import SessionUser
from dashboard.resources import get_session_factory, gradcam_heatmap
from services import export
from services.reading import Analysis, StagedUpload, stage

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


def _cache(name: str, size: int) -> LRUCache:
    """This browser session's least-recently-used cache ``name`` of at most ``size`` entries."""
    return st.session_state.setdefault(name, LRUCache(size))


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
        return export.headers_of_series(got[1], series)
    files = st.session_state.get("upload") or []
    if not files:
        return None
    ident = tuple((f.name, f.size) for f in files)
    cache = _cache("_upload_headers", 1)
    if ident not in cache:
        cache[ident] = export.upload_headers((f.name, f.getvalue()) for f in files)
    return export.headers_of_series(cache[ident], series)


def _saved_read(user: SessionUser):
    """The reader's read saved on this page (its form values), or None before one is saved."""
    if not st.session_state.get("_saved_review"):
        return None
    return export.reader_read(st.session_state.get("review_finding"), st.session_state.get("review_agreement"),
                              user.display_name or user.username)


def _exports() -> export.DicomExports:
    """This browser session's prepared DICOM exports and SR predecessor chain."""
    return st.session_state.setdefault("_dicom_exports", export.DicomExports())


def export_section(user: SessionUser, series: Series, analysis: Analysis,
                   nodules: export.NoduleExport | None = None) -> None:
    """The DICOM export of the analysed series: SC of a slice + SR, download and send to the PACS.

    The SR names the reader's read once one is saved; a changed read builds a new SR (new SOP
    Instance UID) that lists the one last downloaded or sent as its predecessor
    (``services.export.DicomExports``). With ``nodules`` (the detection and the reader's nodule
    read), the SR gets one measurement group per accepted, corrected or added nodule and the SC
    the circles of those on its slice; a changed nodule read needs a new export too.
    """
    st.subheader("DICOM export")
    if series.source_kind != "dicom":
        st.caption("JPG/PNG slices carry no DICOM identity: their result cannot be exported as DICOM.")
        return
    headers = headers_for(series)
    if not headers:
        st.caption("The DICOM headers of this series are no longer in this session: load it again to export.")
        return
    n = len(series.slices)
    slice_no = st.number_input("Slice for the Secondary Capture", min_value=1, max_value=n,
                               value=int(analysis.most_suspicious_index) + 1, key="export_slice")
    index = int(slice_no) - 1
    read = _saved_read(user)
    exports = _exports()
    bundle = exports.prepared(analysis, index, read, nodules)
    if bundle is None:
        if exports.outdated(analysis):
            st.caption("The slice or your read changed since the DICOM export was prepared: prepare it again "
                       "(a new report; anything sent before stays in the PACS).")
        if not st.button("Prepare DICOM export", key="export_prepare"):
            return
        from core.pacs.export import ExportError  # highdicom: ~1 s once, when an export is wanted

        try:
            with st.spinner("Preparing the DICOM objects..."):
                bundle = exports.prepare(
                    series, analysis, index=index, headers=headers, read=read,
                    heatmap=lambda i, cls: gradcam_heatmap(analysis, series, i, cls),
                    alpha=float(st.session_state.get("gradcam_opacity", 0.4)), nodules=nodules)
        except ExportError as exc:
            st.error(f"The DICOM export cannot be made: {exc}")
            return
    reported = sum(st_.status in export.REPORTED for st_ in nodules.read.states) if nodules is not None else 0
    circled = len(export.nodule_circles(nodules, index))
    st.caption(f"A Secondary Capture of slice {index + 1} with the Grad-CAM heatmap"
               + (f" and {circled} nodule circle(s)" if circled else "")
               + f" and a Structured Report of the AI result{' and your read' if read else ''}"
               + (f" with {reported} nodule measurement group(s)" if reported else "")
               + ", marked unverified, in new series of this study.")
    factory = get_session_factory()
    c1, c2 = st.columns(2)
    c1.download_button("Download DICOM", data=bundle.zipped, file_name="lungreview-ai-result.zip",
                       mime="application/zip", key="export_download", on_click=exports.downloaded,
                       args=(factory, bundle, analysis), kwargs={"user_id": user.id})
    if not enabled():
        return
    if c2.button("Send to PACS", key="export_send"):
        try:
            exports.send(factory, bundle, analysis, client=client(), user_id=user.id)
        except PacsError as exc:
            st.error(str(exc))
            return
    sent = exports.last_sent(analysis)
    if sent:
        st.success(sent)
