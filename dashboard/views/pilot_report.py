"""Pilot report (coordinators, leads, admins): the reader study's results, figures and downloads.

Numbers come from ``services.pilot_report.build_report`` (``core.stats.reader_metrics``): sensitivity,
specificity, accuracy and ROC AUC unaided and aided with 95 % case-bootstrap intervals, Cohen's
kappa with the AI, changes of mind and the automation-bias rate, time per case, SUS.

Browser: selectbox "Reading list"; headings "Participants", "Results", "Figures", "Limitations";
download buttons "Download report (HTML)" and "Download reads (CSV)" (each download is audited).
"""

from __future__ import annotations

import functools

import streamlit as st

from dashboard.components import RESULTS_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services.pilot_report import build_report, limitations, make_report
from services.reader_study import ReaderStudyService


def service() -> ReaderStudyService:
    """The reader-study service on the app's database."""
    return ReaderStudyService(get_session_factory())


def download(list_id: int, viewer_id: int, what: str) -> str:
    """The HTML report or the reads CSV, built when the user clicks (records an "export" event)."""
    report = make_report(service(), viewer_id, list_id)
    return report.html if what == "html" else report.reads_csv


def body(user: SessionUser) -> None:
    """The pilot report page."""
    svc = service()
    lists = svc.lists(user.id)
    if not lists:
        st.info("No reading list yet. A pilot coordinator makes one on Reading lists.")
        return
    by_id = {x.list_id: x for x in lists}
    list_id = st.selectbox("Reading list", list(by_id), key="pr_list", format_func=lambda i: by_id[i].name)
    data = svc.study_data(user.id, list_id)
    if data.reads.empty:
        st.info("No reads yet on this list.")
        return
    report = build_report(data)
    name = by_id[list_id].name
    c1, c2 = st.columns(2)
    c1.download_button("Download report (HTML)", data=functools.partial(download, list_id, user.id, "html"),
                       file_name=f"pilot_report_{name}.html", mime="text/html", key="pr_html", on_click="ignore")
    c2.download_button("Download reads (CSV)", data=functools.partial(download, list_id, user.id, "csv"),
                       file_name=f"pilot_reads_{name}.csv", mime="text/csv", key="pr_csv", on_click="ignore")
    st.header("Participants")
    st.dataframe(report.tables["participants"], hide_index=True, key="pr_participants")
    st.dataframe(report.tables["cases"], hide_index=True, key="pr_cases")
    st.header("Results")
    for key, title in (("accuracy", "Malignant versus rest [95 % interval]"),
                       ("auc_difference", "Reader-averaged ROC AUC, aided minus unaided"),
                       ("kappa", "Agreement with the AI (Cohen's kappa)"), ("changes", "Changes of mind"),
                       ("automation_bias", "Automation bias"), ("times", "Time per case")):
        st.subheader(title)
        st.dataframe(report.tables[key], hide_index=True, key=f"pr_{key}")
    st.header("Figures")
    for key, fig in report.figures.items():
        st.plotly_chart(fig, key=f"pr_fig_{key}")
    st.header("Limitations")
    for sentence in limitations(report.results, data):
        st.markdown(f"- {sentence}")


if __name__ == "__main__":
    run_page(body, roles=RESULTS_ROLES, title="Pilot report", what="read the pilot report")
