"""Compare models (leads, admins): every registered model side by side on its test split, and the
live agreement of radiologists with each model.

Metrics come from each entry's ``evaluation.json`` (``models.evaluation.evaluate`` / ``core.stats.metrics``): 95 %
intervals are percentile bootstraps over patient groups (Efron & Tibshirani 1993); ECE with 15
bins (Guo et al. 2017); Brier (1950). Reader agreement: Cohen's kappa (1960), linearly weighted
(Cohen 1968) and Fleiss' kappa (1971), from ``services.analytics``.

Browser: headings "Test-split metrics", "ROC curves", "Confusion matrices", "Reliability",
"Latency and size", "Radiologists vs AI"; a model without evaluation is listed as
"<id>: not evaluated yet".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.registry import list_cards, read_evaluation
from dashboard.components import COMPARE_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services.accounts import reader_agreement

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


if __name__ == "__main__":
    run_page(body, roles=COMPARE_ROLES, title="Compare models", what="compare models")
