"""Worklist / history: uploaded studies, their AI result, who read them and what they said.

Re-opening a study shows the STORED inference (per-slice scores, series result) and the reads;
images are not stored in LungReview, so slices and Grad-CAM need the files again: re-uploading
the same files on "Read a study" is recognised by content hash and reuses the stored inference.

Browser: filters "Reader", "Model", "Finding", "Agreement" (each with "All"); the table; the
selector "Open a study" (options "Study <id> · <key>"); in the opened study, heading
"Study <id>", one block per model with "AI result" and a chart, and the button
"Re-upload this study on Read a study".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.config import CLASS_NAMES, Agreement, Finding
from dashboard.components import ALL_ROLES, READ_ROLES, SessionUser, allowed, run_page, slice_score_figure
from dashboard.resources import get_session_factory
from db.repository import latest_inference, list_users, worklist

ALL = "All"


def ai_label_text(label: str, ood: bool) -> str:
    """The AI label as shown: "not applicable" when the out-of-distribution guard fired."""
    if ood:
        return f"not applicable (input outside the training data; model said {label})"
    return str(label)


def positive_column(class_names: list[str]) -> int:
    """Index of the malignancy class ("malignant", else "cancer", else the last class)."""
    for name in ("malignant", "cancer"):
        if name in class_names:
            return class_names.index(name)
    return len(class_names) - 1


def stored_class_names(series_result: dict, k: int) -> list[str]:
    """Class names of a stored inference (kept in its series result; 3 classes default to CLASS_NAMES)."""
    names = series_result.get("class_names")
    if isinstance(names, list) and len(names) == k:
        return [str(n) for n in names]
    return list(CLASS_NAMES) if k == len(CLASS_NAMES) else [f"class {i}" for i in range(k)]


def filters(reader_names: dict[int, str], models: list[str]) -> dict:
    """The four filter widgets; returns keyword arguments for ``db.repository.worklist``."""
    c1, c2, c3, c4 = st.columns(4)
    reader = c1.selectbox("Reader", [ALL, *reader_names], key="wl_reader",
                          format_func=lambda v: v if v == ALL else reader_names[v])
    model = c2.selectbox("Model", [ALL, *models], key="wl_model")
    finding = c3.selectbox("Finding", [ALL, *(f.value for f in Finding)], key="wl_finding")
    agreement = c4.selectbox("Agreement", [ALL, *(a.value for a in Agreement)], key="wl_agreement")
    return {
        "reader_id": None if reader == ALL else int(reader),
        "model_id": None if model == ALL else model,
        "finding": None if finding == ALL else finding,
        "agreement": None if agreement == ALL else agreement,
    }


def show_study(user: SessionUser, study_id: int, rows: pd.DataFrame) -> None:
    """Stored AI results and current reads of one study."""
    st.subheader(f"Study {study_id}")
    st.info(
        "Images are not stored in LungReview (privacy). To see the slices and the Grad-CAM again, upload "
        "the same files on Read a study: they are recognised by their content hash and the stored AI "
        "result is reused, not recomputed."
    )
    models = [m for m in rows["model_id"].dropna().unique()]
    if not models:
        st.write("No AI result is stored for this study yet.")
    with get_session_factory(read_only=True).begin() as s:
        inferences = {m: latest_inference(s, study_id, m) for m in models}
    for model_id, inf in inferences.items():
        if inf is None:
            continue
        probs = np.asarray(inf.slice_probabilities, dtype=float)
        names = stored_class_names(inf.series_result or {}, probs.shape[1])
        pos = positive_column(names)
        st.markdown(
            f"**{model_id}** · AI result: **{ai_label_text(inf.ai_label, bool(inf.ood))}** · "
            f"series score {inf.series_score:.3f} · {probs.shape[0]} slice(s) · "
            f"{inf.latency_ms:.0f} ms · run {inf.created_at:%Y-%m-%d %H:%M} UTC"
        )
        if inf.ood:
            st.warning("The out-of-distribution guard fired on this study: the AI result does not apply.")
        suspicious = int(np.argmax(probs[:, pos]))
        st.plotly_chart(slice_score_figure(probs[:, pos], suspicious=suspicious, threshold=inf.threshold,
                                           score_name=names[pos]), key=f"wl_chart_{model_id}")
    reads = rows.dropna(subset=["review_id"])
    if reads.empty:
        st.write("Nobody has read this study yet.")
    else:
        st.dataframe(reads[["reader", "model_id", "finding", "agreement", "confidence", "reviewed_at"]],
                     hide_index=True, key="wl_study_reads")
    if allowed(user, READ_ROLES) and st.button("Re-upload this study on Read a study", key="wl_reupload"):
        st.switch_page("views/read_study.py")


def body(user: SessionUser) -> None:
    """The worklist page."""
    with get_session_factory(read_only=True).begin() as s:
        reader_names = {u.id: u.display_name for u in list_users(s)}
        everything = worklist(s)
    models = sorted(everything["model_id"].dropna().unique().tolist())
    kwargs = filters(reader_names, models)
    with get_session_factory(read_only=True).begin() as s:
        table = worklist(s, **kwargs)
    if table.empty:
        st.info("No studies match. Studies appear here once they are uploaded on Read a study.")
        return
    shown = table.assign(ai_result=[
        "" if pd.isna(lbl) else ai_label_text(lbl, bool(ood)) for lbl, ood in zip(table["ai_label"], table["ood"],
                                                                                  strict=True)
    ])
    st.dataframe(
        shown[["study_id", "study_key", "uploaded_at", "source_kind", "n_slices", "model_id", "ai_result",
               "series_score", "reader", "finding", "agreement", "confidence", "reviewed_at"]],
        hide_index=True, key="worklist_table",
    )
    st.caption(f"{table['study_id'].nunique()} studies, {table['review_id'].notna().sum()} current reads. "
               "Study keys are pseudonymous.")
    keys = dict(zip(table["study_id"], table["study_key"], strict=False))
    study_id = st.selectbox("Open a study", list(keys), index=None, key="wl_open",
                            format_func=lambda i: f"Study {i} · {keys[i]}", placeholder="choose a study")
    if study_id is not None:
        show_study(user, int(study_id), everything[everything["study_id"] == study_id])


if __name__ == "__main__":
    run_page(body, roles=ALL_ROLES, title="Worklist", what="see the worklist")
