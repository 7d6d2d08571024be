"""Worklist / history: uploaded studies, their AI result, who read them and what they said.

Re-opening a study shows the STORED inference (per-slice scores, series result) and the reads.
"Open case" opens a series on "Read a study" from the study store (decoded, de-identified slices
kept on the server, least recently used evicted first; ``core/store.py``), without its files; a
series the store no longer holds needs its files again (re-uploading them is recognised by
content hash and reuses the stored inference).

One row per series read: a study with two series shows a row for each (series description and
pseudonymous series key), one per model's newest result on it and current read. Nodules: the
newest nodule detection beside that result ("AI nodules": its findings, or "refused"), and the
row reader's accepted (corrected included), rejected and added nodules and Lung-RADS category.

Browser: filters "Reader", "Model", "Finding", "Agreement" (each with "All"); the table; the
selector "Open a study" (options "Study <id> · <key>"); in the opened study, heading
"Study <id>", one block per series and model with "AI result", a chart and (readers) the button
"Open case" (key ``wl_open_case_<series id>_<model>``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.domain import Agreement, Finding, shown_label
from dashboard.components import ALL_ROLES, READ_ROLES, SessionUser, allowed, run_page, slice_score_figure
from dashboard.resources import get_session_factory
from services.accounts import study_results, worklist, worklist_choices

ALL = "All"


def ai_label_text(label: str, ood: bool) -> str:
    """The AI label as shown (``core.domain.shown_label``): "not applicable ..." when the guard fired."""
    return shown_label(label, bool(ood), model_said=True)


def nodule_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The worklist's nodule columns as shown: "AI nodules" (count, "refused" or ""), "accepted",
    "rejected", "added" (counts or "") and "Lung-RADS" ("" when none)."""
    def count(v) -> str:
        return "" if pd.isna(v) else str(int(v))

    ai = ["" if pd.isna(n) else ("refused" if isinstance(r, str) and r else str(int(n)))
          for n, r in zip(table["ai_nodules"], table["nodule_refusal"], strict=True)]
    return pd.DataFrame({"AI nodules": ai, "accepted": table["nodules_accepted"].map(count),
                         "rejected": table["nodules_rejected"].map(count), "added": table["nodules_added"].map(count),
                         "Lung-RADS": table["lungrads"].map(lambda v: "" if pd.isna(v) else str(v))},
                        index=table.index)


def filters(reader_names: dict[int, str], models: list[str]) -> dict:
    """The four filter widgets; returns keyword arguments for ``services.accounts.worklist``."""
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


def show_study(user: SessionUser, study_id: int) -> None:
    """Stored AI results (per series and model) and current reads of one study."""
    st.subheader(f"Study {study_id}")
    can_read = allowed(user, READ_ROLES)
    if can_read:
        st.caption("Open case shows the slices and the Grad-CAM again from the study store, without the files. "
                   "The store keeps the most recently used series up to its size limit; an older case needs its "
                   "files again (recognised by content hash: the stored AI result is reused, not recomputed).")
    stored = study_results(get_session_factory(read_only=True), study_id)
    if not stored.results:
        st.write("No AI result is stored for this study yet.")
    several = len({r.series_id for r in stored.results}) > 1
    for r in stored.results:
        pos = r.suspicious_index
        where = f"{r.series_description or 'series'} · " if several else ""
        st.markdown(
            f"{where}**{r.model_id}** · AI result: **{ai_label_text(r.ai_label, r.ood)}** · "
            f"series score {r.series_score:.3f} · {r.probabilities.shape[0]} slice(s) · "
            f"{r.latency_ms:.0f} ms · run {r.created_at:%Y-%m-%d %H:%M} UTC"
        )
        if r.ood:
            st.warning("The out-of-distribution guard fired on this study: the AI result does not apply.")
        suspicious = int(np.argmax(r.probabilities[:, pos]))
        st.plotly_chart(slice_score_figure(r.probabilities[:, pos], suspicious=suspicious, threshold=r.threshold,
                                           score_name=r.class_names[pos]),
                        key=f"wl_chart_{r.series_id}_{r.model_id}")
        if can_read and st.button("Open case", key=f"wl_open_case_{r.series_id}_{r.model_id}"):
            st.switch_page("views/read_study.py", query_params={"case": str(r.series_id), "model": r.model_id})
    reads = stored.reads
    if reads.empty:
        st.write("Nobody has read this study yet.")
    else:
        cols = ["reader", "model_id", "finding", "agreement", "confidence", "reviewed_at"]
        if several:
            cols.insert(0, "series_description")
        st.dataframe(reads[cols], hide_index=True, key="wl_study_reads")


def body(user: SessionUser) -> None:
    """The worklist page."""
    choices = worklist_choices(get_session_factory(read_only=True))
    kwargs = filters(choices.readers, choices.models)
    table = worklist(get_session_factory(read_only=True), **kwargs)
    if table.empty:
        st.info("No studies match. Studies appear here once they are uploaded on Read a study.")
        return
    shown = table.assign(ai_result=[
        "" if pd.isna(lbl) else ai_label_text(lbl, bool(ood)) for lbl, ood in zip(table["ai_label"], table["ood"],
                                                                                  strict=True)
    ], series=table["series_description"].fillna(""))
    shown = pd.concat([shown, nodule_columns(table)], axis=1)
    st.dataframe(
        shown[["study_id", "study_key", "uploaded_at", "source_kind", "series", "n_slices", "model_id", "ai_result",
               "series_score", "reader", "finding", "agreement", "confidence", "AI nodules", "accepted", "rejected",
               "added", "Lung-RADS", "reviewed_at"]],
        hide_index=True, key="worklist_table",
    )
    n_series = table["series_id"].nunique()
    st.caption(f"{table['study_id'].nunique()} studies, {n_series} series, {table['review_id'].notna().sum()} "
               "current reads. Study keys are pseudonymous.")
    keys = dict(zip(table["study_id"], table["study_key"], strict=False))
    study_id = st.selectbox("Open a study", list(keys), index=None, key="wl_open",
                            format_func=lambda i: f"Study {i} · {keys[i]}", placeholder="choose a study")
    if study_id is not None:
        show_study(user, int(study_id))


if __name__ == "__main__":
    run_page(body, roles=ALL_ROLES, title="Worklist", what="see the worklist")
