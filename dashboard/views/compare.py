"""Compare models (leads, admins): every registered model side by side on its test split, and the
live agreement of radiologists with each model.

Metrics come from each entry's ``evaluation.json`` (``models.evaluation.evaluate`` / ``core.stats.metrics``): 95 %
intervals are percentile bootstraps over patient groups (Efron & Tibshirani 1993); ECE with 15
bins (Guo et al. 2017); Brier (1950). Reader agreement: Cohen's kappa (1960), linearly weighted
(Cohen 1968) and Fleiss' kappa (1971), from ``services.analytics``.

Your archive (``services.archive``, docs/archive.md): a lead scores a PACS query with chosen
models on Ray, follows the progress, and compares the models on the site's own series (with a
reference CSV: AUC, sensitivity, specificity); the series where the models disagree most link to
Read a study when the study store holds them.

Browser: headings "Test-split metrics", "ROC curves", "Confusion matrices", "Reliability",
"Latency and size", "Nodule detector (FROC)", "Your archive",
"Radiologists vs AI", "Nodule findings: readers vs AI"; a model without evaluation is
listed as "<id>: not evaluated yet".

Nodule detector: the FROC curve of ``froc.json`` (``lungreview evaluate --nodules``; sensitivity
against false positives per scan, LUNA16's CPM in the legend, Setio et al. 2017) and, per shared
annotated series, whether the detector's top-ranked nodule and each slice classifier's most
suspicious slice (``dicom_check.json``) lie on the lesion.

Nodule findings: readers vs AI (``services.accounts.nodule_model_summary``; table test id
``compare_nodules``): per detector model and reader, the fraction of AI findings the readers
accepted (accepted / (accepted + rejected)) and the nodules they added (what the model missed),
with a pooled "all readers" row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.registry import list_cards, read_dicom_check, read_evaluation, read_froc
from dashboard.components import COMPARE_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services.accounts import nodule_model_summary, reader_agreement

#: (key in evaluation.json, row label) of the headline metrics.
METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("macro_f1", "Macro F1"),
    ("sensitivity_malignant", "Sensitivity (malignant)"),
    ("specificity_malignant", "Specificity (malignant)"),
    ("roc_auc_ovr", "ROC AUC (one-vs-rest, macro)"),
    ("roc_auc_malignant", "ROC AUC (malignant)"),
    ("ece", "ECE (15 bins, lower is better)"),
    ("brier", "Brier score (lower is better)"),
)


def fmt_ci(value, ci) -> str:
    """``0.812 [0.751, 0.866]``; "n/a" for a missing value; no interval when unknown."""
    if value is None:
        return "n/a"
    text = f"{float(value):.3f}"
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
        text += f" [{float(ci[0]):.3f}, {float(ci[1]):.3f}]"
    return text


def metrics_table(evaluations: dict[str, dict]) -> pd.DataFrame:
    """One row per metric, one column per model: value with its 95 % CI, plus n, latency, size."""
    rows = {}
    for key, label in METRICS:
        rows[label] = {m: fmt_ci(e.get(key), e.get("ci95", {}).get(key)) for m, e in evaluations.items()}
    for m, e in evaluations.items():
        for cls, d in (e.get("per_class") or {}).items():
            rows.setdefault(f"Recall {cls}", {})[m] = f"{d['recall']:.3f} (n={d['support']})"
            rows.setdefault(f"Precision {cls}", {})[m] = f"{d['precision']:.3f}"
    rows["Test slices (n)"] = {m: str(e.get("n")) for m, e in evaluations.items()}
    rows["Patient groups"] = {m: str(e.get("n_groups")) for m, e in evaluations.items()}
    rows["Latency (ms / slice)"] = {m: f"{e.get('latency_ms_per_slice', float('nan')):.1f}"
                                    for m, e in evaluations.items()}
    rows["Model size (MB)"] = {m: f"{e.get('model_size_bytes', 0) / 1e6:.1f}" for m, e in evaluations.items()}
    rows["CI method"] = {m: str(e.get("ci_method", "")) for m, e in evaluations.items()}
    return pd.DataFrame(rows).T.fillna("")


def roc_figure(evaluations: dict[str, dict], cls: str) -> go.Figure:
    """ROC curves (one-vs-rest for ``cls``) of every model, overlaid, with the chance diagonal."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}))
    for m, e in evaluations.items():
        curve = (e.get("roc_curves") or {}).get(cls)
        if curve:
            fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=m))
    fig.update_layout(height=420, xaxis_title="1 - specificity (FPR)", yaxis_title="sensitivity (TPR)",
                      title=f"ROC, {cls} vs rest", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def confusion_figure(e: dict, title: str) -> go.Figure:
    """Confusion matrix heatmap (rows true, columns predicted)."""
    names = e.get("class_names") or [str(i) for i in range(len(e["confusion_matrix"]))]
    fig = px.imshow(np.asarray(e["confusion_matrix"]), x=names, y=names, text_auto=True,
                    color_continuous_scale="Blues", labels={"x": "predicted", "y": "true", "color": "slices"})
    fig.update_layout(height=320, title=title, coloraxis_showscale=False)
    return fig


def reliability_figure(evaluations: dict[str, dict]) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per bin, every model."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"dash": "dot", "color": "grey"}))
    for m, e in evaluations.items():
        r = e.get("reliability") or {}
        conf, acc, count = r.get("confidence", []), r.get("accuracy", []), r.get("count", [])
        pts = [(c, a, n) for c, a, n in zip(conf, acc, count, strict=False) if n and c is not None and a is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=m,
                                     text=[f"n={p[2]}" for p in pts]))
    fig.update_layout(height=420, xaxis_title="mean confidence", yaxis_title="accuracy", title="Reliability",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def froc_figure(report: dict) -> go.Figure:
    """FROC curves (rule applied) of a ``froc.json`` report, LUNA16 reader rule N=3 and N=1, log FP axis."""
    fig = go.Figure()
    for key in ("N=3", "N=1"):
        res = (report.get("results") or {}).get(key, {}).get("with_rule")
        if not res or res.get("cpm") is None:
            continue
        curve = res["curve"]
        pts = [(max(f, 1 / 16), s) for f, s in zip(curve["fp_per_scan"], curve["sensitivity"], strict=False)
               if s is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", line_shape="hv",
                                 name=f"{key} readers, {res['n_lesions']} lesions (CPM {res['cpm']:.2f})"))
    fig.update_layout(height=380, xaxis_type="log", xaxis_title="false positives per scan",
                      yaxis_title="sensitivity", yaxis_range=[0, 1.02], title="FROC, nodule detector",
                      xaxis={"tickvals": [0.125, 0.25, 0.5, 1, 2, 4, 8], "range": [np.log10(1 / 16), np.log10(16)]})
    return fig


def triage_table(report: dict, checks: dict[str, dict]) -> pd.DataFrame:
    """Per shared series: the detector's top nodule on the lesion, each slice classifier's most
    suspicious slice in the lesion (yes / no / blank when not measured)."""
    rows: dict[str, dict[str, str]] = {}
    for r in report.get("series", []):
        rows.setdefault(r["series"], {})["nodule detector: top nodule on lesion"] = "yes" if r["top_on_lesion"] else "no"
    for model_id, check in checks.items():
        for r in check.get("series", []):
            rows.setdefault(r["series"], {})[f"{model_id}: top slice on lesion"] = (
                "yes" if r.get("most_suspicious_in_lesion") else "no")
    return pd.DataFrame(rows).T.fillna("")


def nodule_section(cards) -> None:
    """The nodule detector's FROC and the triage table against the slice classifiers."""
    detectors = list_cards(kind="nodule_detector")
    if not detectors:
        return
    st.header("Nodule detector (FROC)")
    st.warning("Three studies (four series) are a check, not a validation; LIDC-IDRI-0001/0002 were most probably "
               "in the detector's training data (LUNA16).")
    for det in detectors:
        report = read_froc(det.id)
        if report is None:
            st.info(f"{det.id}: not evaluated yet (python -m models.evaluate --nodules ../shared/datasets).")
            continue
        st.plotly_chart(froc_figure(report), key=f"compare_froc_{det.id}")
        checks = {c.id: chk for c in cards if (chk := read_dicom_check(c.id)) is not None}
        st.caption("Does the first thing shown lie on the lesion? Detector: its top-ranked nodule; slice "
                   "classifiers: their most suspicious slice (dicom_check.json).")
        st.dataframe(triage_table(report, checks), key=f"compare_triage_{det.id}")


def body(user: SessionUser) -> None:
    """The compare page."""
    cards = list_cards()
    if not cards:
        st.info("No model is registered yet.")
        return
    evaluations: dict[str, dict] = {}
    for card in cards:
        e = read_evaluation(card.id)
        if e is None:
            st.warning(f"{card.id}: not evaluated yet (no evaluation.json; run lungreview evaluate).")
        else:
            evaluations[card.id] = e
    st.caption("Registered models: " + ", ".join(c.id for c in cards))
    if evaluations:
        st.header("Test-split metrics")
        st.caption("Value [95 % CI]; each model on the test split of its own split manifest.")
        table = metrics_table(evaluations)
        st.dataframe(table, key="compare_metrics", height=35 * (len(table) + 1) + 3)
        st.header("ROC curves")
        classes = sorted({c for e in evaluations.values() for c in (e.get("roc_curves") or {})},
                         key=lambda c: (c != "malignant", c))
        if classes:
            cls = st.selectbox("Class", classes, key="compare_roc_class")
            st.plotly_chart(roc_figure(evaluations, cls), key="compare_roc")
        st.header("Confusion matrices")
        cols = st.columns(min(3, len(evaluations)))
        for i, (m, e) in enumerate(evaluations.items()):
            cols[i % len(cols)].plotly_chart(confusion_figure(e, m), key=f"compare_cm_{m}")
        st.header("Reliability")
        st.plotly_chart(reliability_figure(evaluations), key="compare_reliability")
        st.header("Latency and size")
        st.caption("Latency: batched Keras/TensorFlow predict while the model was evaluated (the reference "
                   "for the metrics above). The dashboard serves probabilities with OpenVINO when it matches "
                   "Keras within 1e-4, about twice as fast for ResNet-50; `lungreview bench --model ID` "
                   "measures both on this machine.")
        ls = pd.DataFrame({"model": list(evaluations),
                           "latency (ms / slice)": [e.get("latency_ms_per_slice") for e in evaluations.values()],
                           "size (MB)": [e.get("model_size_bytes", 0) / 1e6 for e in evaluations.values()]})
        left, right = st.columns(2)
        left.plotly_chart(px.bar(ls, x="model", y="latency (ms / slice)", height=300), key="compare_latency")
        right.plotly_chart(px.bar(ls, x="model", y="size (MB)", height=300), key="compare_size")
    nodule_section(cards)

    archive_section(user)

    nodule_reads_section()
    st.header("Radiologists vs AI")
    agreement = reader_agreement(get_session_factory(read_only=True), [c.id for c in cards])
    per_model, per_reader, fleiss = agreement.per_model, agreement.per_reader, agreement.fleiss
    confusions = agreement.confusions
    if per_model.empty:
        st.info("No reads recorded yet: agreement appears once radiologists save reads.")
        return
    st.caption("Current reads only. Kappa: Cohen (unweighted) and linear weights with normal < benign < malignant.")
    st.dataframe(per_model.round(3), hide_index=True, key="compare_agreement")
    with st.expander("Per reader"):
        st.dataframe(per_reader.round(3), hide_index=True, key="compare_agreement_reader")
    if not fleiss.empty:
        st.caption("Fleiss' kappa among readers of the same studies")
        st.dataframe(fleiss.round(3), hide_index=True, key="compare_fleiss")
    read_models = [m for m in per_model["model_id"] if m in confusions]
    if read_models:
        cols = st.columns(min(3, len(read_models)))
        for i, m in enumerate(read_models):
            fig = px.imshow(confusions[m].to_numpy(), x=list(confusions[m].columns), y=list(confusions[m].index),
                            text_auto=True, color_continuous_scale="Greens")
            fig.update_layout(height=300, title=f"Reader vs AI: {m}", coloraxis_showscale=False)
            cols[i % len(cols)].plotly_chart(fig, key=f"compare_reader_cm_{m}")


# ------------------------------------------------------------------------------- your archive
def _drive(service, run_id: int) -> None:
    """Score run ``run_id`` here, with a progress bar; leaving the page pauses it (resume continues)."""
    from services.archive import ArchiveError

    bar = st.progress(0.0, text=f"Run {run_id}: planning (searching the PACS)")

    def show(p) -> None:
        bar.progress((p.done + p.failed) / p.total if p.total else 0.0, text=p.line())

    try:
        p = service.run(run_id, progress=show)
    except ArchiveError as exc:
        st.error(str(exc))
        return
    (st.success if p.status == "finished" else st.warning)(p.line())


def _archive_form(service, user: SessionUser, runs: list[dict]) -> None:
    """Start a run (query and models) or resume one that is not finished."""
    from services.archive import ArchiveError, ArchiveQuery

    with st.form("archive_new"):
        left, right = st.columns(2)
        date_from = left.date_input("Study date from", value=None, key="archive_from")
        date_to = right.date_input("Study date to", value=None, key="archive_to")
        description = st.text_input("Study or series description contains (optional)", key="archive_description")
        max_series = st.number_input("At most this many series (0: all)", min_value=0, value=0, step=100,
                                     key="archive_max")
        ids = [c.id for c in list_cards()]
        models = st.multiselect("Models", ids, default=ids[:2], key="archive_models")
        start = st.form_submit_button("Start run")
    if start:
        try:
            query = ArchiveQuery(date_from=date_from, date_to=date_to, description=description.strip(),
                                 max_series=int(max_series) or None)
            run_id = service.start(query, models, user_id=user.id)
        except ArchiveError as exc:
            st.error(str(exc))
        else:
            _drive(service, run_id)
    open_runs = [r for r in runs if r["status"] != "finished"]
    if open_runs:
        left, right = st.columns([3, 1])
        chosen = left.selectbox("Paused or interrupted run", open_runs, key="archive_resume_run",
                                format_func=lambda r: f"run {r['run_id']}: {r['status']}, {r['n_series']} series")
        if right.button("Resume run", key="archive_resume"):
            _drive(service, chosen["run_id"])


def _disagreement_table(service, c) -> pd.DataFrame:
    """The disagreement table with a "Read a study" column: a ``?case=`` link or where to open it."""
    table = c.disagreements.copy()
    if table.empty:
        return table
    links = service.case_links(table["series_key"])
    table["read a study"] = [f"read?case={links[k]}" if k in links else
                             "not in the study store: open it from the PACS" for k in table["series_key"]]
    return table


def archive_section(user: SessionUser) -> None:
    """Your archive: start or resume an archive run, follow it, and compare the models on it."""
    from core.stats.archive import ArchiveStatsError, parse_reference_csv
    from dashboard.views import pacs
    from services.archive import ArchiveService

    st.header("Your archive")
    st.caption("Score the site's own chest CTs from the PACS with every chosen model (on Ray: this machine, or "
               "the cluster of LUNGREVIEW_RAY_ADDRESS) and compare the models on them. Results are stored as a "
               "run of their own, never as reads. The workers read the PACS credentials from their environment "
               "(docs/archive.md).")
    service = ArchiveService(get_session_factory(), pacs.client() if pacs.enabled() else None)
    runs = service.runs()
    if pacs.enabled():
        _archive_form(service, user, runs)
        runs = service.runs()
    else:
        st.info("No PACS is configured (LUNGREVIEW_DICOMWEB_URL): runs can be compared here, not started.")
    if not runs:
        st.info("No archive run yet.")
        return
    run = st.selectbox("Compare the models on run", runs, key="archive_run",
                       format_func=lambda r: f"run {r['run_id']} ({r['status']}): {', '.join(r['models'])}")
    status = service.status(run["run_id"])
    done = {m: c["done"] for m, c in status["rows"].items()}
    st.caption(f"Run {run['run_id']}: {status['status']}, {status['n_series']} series planned; scored per model: "
               + ", ".join(f"{m} {n}" for m, n in done.items())
               + (f". {status['message']}" if status["message"] else ""))
    failures = {m: f for m, f in status["failures"].items() if f}
    if failures:
        st.caption("Failures (series) by reason: " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v}" for k, v in sorted(f.items())) for m, f in failures.items()))
    upload = st.file_uploader("Reference standard (CSV: study_key or accession, finding)", type=["csv"],
                              key="archive_reference")
    reference = None
    if upload is not None:
        try:
            parsed = parse_reference_csv(upload.getvalue())
            if parsed.by_accession and not pacs.enabled():
                st.warning("Accession numbers need the PACS to be found; only the study keys are used.")
                reference = dict(parsed.by_study_key)
            else:
                reference, notes = service.resolve_reference(parsed)
                for note in notes:
                    st.caption(note)
        except ArchiveStatsError as exc:
            st.error(str(exc))
    c = service.compare(run["run_id"], reference, n_boot=500)
    if c.scores.empty and c.nodules.empty:
        st.info("No series of this run is scored yet.")
        return
    st.subheader("Series scores")
    st.dataframe(c.scores.round(3), hide_index=True, key="archive_scores")
    if not c.histogram.empty:
        st.plotly_chart(px.bar(c.histogram, x="bin_lo", y="count", color="model_id", barmode="group", height=300,
                               labels={"bin_lo": "series score (bin start)"}), key="archive_histogram")
    if not c.kappa.empty:
        st.subheader("Agreement between models")
        st.caption("Cohen's kappa (unweighted) on the series finding, over the series both models scored.")
        st.dataframe(c.kappa.round(3), hide_index=True, key="archive_kappa")
    if not c.nodules.empty:
        st.subheader("Nodules per series")
        st.dataframe(c.nodules.round(2), hide_index=True, key="archive_nodules")
    if c.accuracy is not None:
        st.subheader("Against the reference standard")
        st.caption(f"{c.n_reference_studies} studies of the run have a reference; one score per study (its most "
                   "suspicious series); 95 % intervals: percentile bootstrap over studies.")
        st.dataframe(c.accuracy.round(3), hide_index=True, key="archive_accuracy")
    st.subheader("Series where the models disagree most")
    st.dataframe(_disagreement_table(service, c), hide_index=True, key="archive_disagreements",
                 column_config={"read a study": st.column_config.LinkColumn("read a study")})


def nodule_reads_section() -> None:
    """Per nodule-detector model: fraction of AI findings accepted and nodules added, per reader."""
    summary = nodule_model_summary(get_session_factory(read_only=True))
    st.header("Nodule findings: readers vs AI")
    if summary.empty:
        st.info("No nodule reads recorded yet: this appears once radiologists accept, reject or add nodules.")
        return
    st.caption("Current reads only. Fraction accepted = accepted / (accepted + rejected) of the AI findings the "
               "reader decided (corrected ones count as accepted); added = nodules the reader found that the "
               "model did not list, per series read.")
    shown = summary.rename(columns={"model_id": "detector", "series_read": "series read",
                                    "ai_findings_shown": "AI findings shown", "fraction_accepted": "fraction accepted",
                                    "added_per_series": "added per series"})
    st.dataframe(shown.drop(columns=["reader_id"]).round(3), hide_index=True, key="compare_nodules")


if __name__ == "__main__":
    run_page(body, roles=COMPARE_ROLES, title="Compare models", what="compare models")
