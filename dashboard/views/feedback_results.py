"""Feedback results (coordinators, leads, admins): SUS by role, mean with 95 % interval, free text,
and CSV exports of reviews, agreement, feedback (and the audit log for admins).

SUS scores: Brooke 1996 (``core.domain``); the interval is the two-sided Student-t interval of the
mean (``core.stats.sus.sus_interval``).

Browser: headings "SUS scores", "What users wrote", "Exports"; download buttons
"Download reviews (CSV)", "Download agreement (CSV)", "Download feedback (CSV)" and, for admins,
"Download audit log (CSV)". With no answers the page says "No feedback yet".
"""

from __future__ import annotations

import functools

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.domain import Role
from dashboard.components import RESULTS_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services.accounts import export_csv, feedback_results

EXPORTS: tuple[tuple[str, str], ...] = (
    ("reviews", "Download reviews (CSV)"),
    ("agreement", "Download agreement (CSV)"),
    ("feedback", "Download feedback (CSV)"),
    ("audit", "Download audit log (CSV)"),
)


def export_data(what: str, viewer_id: int) -> str:
    """CSV text of one export, made when the user clicks (records an "export" audit event).

    Raises:
        db.repository.PermissionDenied: the viewer's role may not export ``what``.
        db.repository.ValidationError: unknown ``what``.
    """
    return export_csv(get_session_factory(), what, viewer_id)


def sus_figures(scores, summary) -> tuple[go.Figure, go.Figure]:
    """(distribution of SUS scores by role, mean per role with its 95 % interval)."""
    dist = px.strip(scores, x="role", y="sus_score", color="role", range_y=[0, 100],
                    labels={"sus_score": "SUS score (0-100)", "role": "role"})
    dist.add_traces(px.box(scores, x="role", y="sus_score").update_traces(marker_color="grey").data)
    dist.update_layout(height=360, showlegend=False, title="SUS score by role")
    mean = go.Figure(go.Scatter(
        x=summary["role"], y=summary["mean"], mode="markers", marker={"size": 12},
        error_y={"type": "data", "symmetric": False, "array": summary["ci_high"] - summary["mean"],
                 "arrayminus": summary["mean"] - summary["ci_low"]},
        hovertemplate="%{x}: mean %{y:.1f}<extra></extra>",
    ))
    mean.add_hline(y=68, line_dash="dot", annotation_text="68: average usability (Sauro 2011)")
    mean.update_layout(height=360, yaxis_range=[0, 100], yaxis_title="mean SUS (95 % CI)",
                       title="Mean SUS with 95 % interval")
    return dist, mean


def body(user: SessionUser) -> None:
    """The feedback results page."""
    results = feedback_results(get_session_factory(read_only=True), user.id)
    summary, texts, scores = results.summary, results.texts, results.scores
    st.header("SUS scores")
    if summary.empty:
        st.info("No feedback yet. Ask the pilot users to fill in Pilot feedback.")
    else:
        st.dataframe(summary.round(1), hide_index=True, key="sus_summary_table")
        dist, mean = sus_figures(scores, summary)
        left, right = st.columns(2)
        left.plotly_chart(dist, key="sus_distribution")
        right.plotly_chart(mean, key="sus_mean")
        st.caption("Intervals need at least two answers per role; SUS above 68 is above average (Sauro 2011).")
    st.header("What users wrote")
    if texts.empty:
        st.info("No free-text answers yet.")
    else:
        st.dataframe(texts, hide_index=True, key="feedback_texts_table")
    st.header("Exports")
    st.caption("CSV files hold pseudonymous study keys and numeric user ids only. Each export is audited.")
    cols = st.columns(len(EXPORTS))
    for col, (what, label) in zip(cols, EXPORTS, strict=True):
        if what == "audit" and user.role != Role.ADMIN.value:
            continue
        col.download_button(label, data=functools.partial(export_data, what, user.id),
                            file_name=f"lungreview_{what}.csv", mime="text/csv", key=f"export_{what}",
                            on_click="ignore")


if __name__ == "__main__":
    run_page(body, roles=RESULTS_ROLES, title="Feedback results", what="read feedback results")
