"""Pilot report (coordinators, leads, admins): the reader study's results, figures and downloads.

Numbers come from ``services.pilot_report.build_report``: sensitivity, specificity, accuracy and
ROC AUC unaided and aided with 95 % case-bootstrap intervals (``core.stats.reader_metrics``), Cohen's
kappa with the AI, changes of mind and the automation-bias rate, time per case, SUS; and the
multi-reader multi-case analysis (``services.pilot_mrmc``): per figure of merit (ROC AUC of the
malignancy rating; wAFROC of the lesion marks where reference lesions exist) the FOMs per reader
and step, the random-reader OR-Hillis test beside the fixed-reader test, aided minus unaided with
its 95 % CI, one plain sentence, and the sample size of the next study at the observed effect and
at the effect typed here. Where an analysis cannot run the page says what is missing instead.

Browser: selectbox "Reading list"; number input "Effect the next study should detect";
headings "Participants", "Results", "Multi-reader multi-case analysis", "Lesion marks",
"Figures", "Limitations"; download buttons "Download report (HTML)", "Download reads (CSV)" and
one per MRMC layout ("ROC reads (CSV)", "RJafroc workbook, ROC (Excel)", "FROC truth (CSV)",
"FROC marks (CSV)", "RJafroc workbook, FROC (Excel)"); each download is audited.
"""

from __future__ import annotations

import functools

import streamlit as st

from dashboard.components import RESULTS_ROLES, SessionUser, run_page
from dashboard.resources import get_session_factory
from services import pilot_mrmc as pm
from services.pilot_report import build_report, limitations, make_report
from services.reader_study import ReaderStudyService


def service() -> ReaderStudyService:
    """The reader-study service on the app's database."""
    return ReaderStudyService(get_session_factory())


def download(list_id: int, viewer_id: int, what: str, effect: float | None = None) -> str | bytes:
    """A file of the report, built when the user clicks (records an "export" event).

    Args:
        what: "html" (the report), "csv" (every read) or a key of ``MrmcSection.downloads``.
    """
    report = make_report(service(), viewer_id, list_id, effect=effect)
    if what == "html":
        return report.html
    if what == "csv":
        return report.reads_csv
    return report.mrmc.downloads[what].content


def show_analysis(a: pm.FomAnalysis, data) -> None:
    """One figure of merit: what is missing, or the sentence, tables and sample sizes."""
    key = "roc" if a.fom == pm.mrmc.ROC_AUC else "wafroc"
    st.subheader(a.fom)
    if a.result is None:
        st.warning("Not analysed. What is missing:\n\n" + "\n".join(f"- {line}" for line in a.missing))
        return
    st.markdown(f"**{a.sentence}**")
    st.caption("Figures of merit per reader and step")
    st.dataframe(pm.fom_table(a, data), hide_index=True, key=f"pr_{key}_foms")
    st.caption("Test that the steps are equal: random readers (generalises to other readers) and fixed readers")
    st.dataframe(pm.test_table(a), hide_index=True, key=f"pr_{key}_tests")
    st.dataframe(pm.difference_table(a), hide_index=True, key=f"pr_{key}_differences")
    with st.expander("Variance components (Obuchowski-Rockette)"):
        st.dataframe(pm.components_table(a), hide_index=True, key=f"pr_{key}_components")
    for note in a.notes:
        st.caption(note)
    for i, ps in enumerate(a.sizes):
        st.markdown(f"*Next study, at the {ps.label} ({ps.effect:.3f})*")
        if ps.size is None:
            st.info(ps.problem)
            continue
        st.markdown(pm.smallest_text(ps.size))
        with st.expander(f"Power by readers and cases, at the {ps.label}"):
            st.dataframe(pm.power_table(ps.size), hide_index=True, key=f"pr_{key}_power_{i}")
            st.dataframe(pm.cases_needed_table(ps.size), hide_index=True, key=f"pr_{key}_needed_{i}")


def body(user: SessionUser) -> None:
    """The pilot report page."""
    svc = service()
    lists = svc.lists(user.id)
    if not lists:
        st.info("No reading list yet. A pilot coordinator makes one on Reading lists.")
        return
    by_id = {x.list_id: x for x in lists}
    list_id = st.selectbox("Reading list", list(by_id), key="pr_list", format_func=lambda i: by_id[i].name)
    effect = st.number_input("Effect the next study should detect", min_value=0.001, max_value=1.0,
                             value=pm.DEFAULT_EFFECT, step=0.01, format="%.3f", key="pr_effect",
                             help="The difference in figure of merit (aided minus unaided, e.g. 0.05 in ROC AUC) the "
                                  "next study should be able to show; the power grid is computed at it.")
    data = svc.study_data(user.id, list_id)
    if data.reads.empty:
        st.info("No reads yet on this list.")
        return
    report = build_report(data, effect=effect)
    name = by_id[list_id].name
    c1, c2 = st.columns(2)
    c1.download_button("Download report (HTML)", data=functools.partial(download, list_id, user.id, "html", effect),
                       file_name=f"pilot_report_{name}.html", mime="text/html", key="pr_html", on_click="ignore")
    c2.download_button("Download reads (CSV)", data=functools.partial(download, list_id, user.id, "csv"),
                       file_name=f"pilot_reads_{name}.csv", mime="text/csv", key="pr_csv", on_click="ignore")
    st.header("Participants")
    st.dataframe(report.tables["participants"], hide_index=True, key="pr_participants")
    st.dataframe(report.tables["cases"], hide_index=True, key="pr_cases")
    st.header("Results")
    for key, title in (("accuracy", "Malignant versus rest [95 % interval]"),
                       ("kappa", "Agreement with the AI (Cohen's kappa)"), ("changes", "Changes of mind"),
                       ("automation_bias", "Automation bias"), ("times", "Time per case")):
        st.subheader(title)
        st.dataframe(report.tables[key], hide_index=True, key=f"pr_{key}")
    st.header("Multi-reader multi-case analysis")
    st.caption("Obuchowski-Rockette with Hillis' degrees of freedom: aided minus unaided with readers and cases as "
               "random samples, the fixed-reader analysis beside it.")
    for a in report.mrmc.analyses:
        show_analysis(a, data)
    st.subheader("The pilot's data for RJafroc, iMRMC or lungreview-mrmc")
    files = report.mrmc.downloads
    cols = st.columns(max(1, len(files)))
    for col, (key, f) in zip(cols, files.items(), strict=False):
        col.download_button(f.label, data=functools.partial(download, list_id, user.id, key), file_name=f.file_name,
                            mime=f.mime, key=f"pr_file_{key}", on_click="ignore")
    for key, why in report.mrmc.download_problems.items():
        st.caption(f"{key}: {why}")
    st.header("Lesion marks")
    st.markdown(f"{len(data.lesions)} reference lesion(s).")
    if len(data.marks):
        st.dataframe(report.mrmc.lesion_counts, hide_index=True, key="pr_lesion_counts")
        st.caption("The aided marks against the unaided ones (the aided step starts from a copy of them)")
        st.dataframe(report.mrmc.mark_changes, hide_index=True, key="pr_mark_changes")
    with st.expander("How marks are scored"):
        for rule in pm.sl.RULES:
            st.markdown(f"- {rule}")
    st.header("Figures")
    for key, fig in report.figures.items():
        st.plotly_chart(fig, key=f"pr_fig_{key}")
    st.header("Limitations")
    for sentence in limitations(report.results, data):
        st.markdown(f"- {sentence}")


if __name__ == "__main__":
    run_page(body, roles=RESULTS_ROLES, title="Pilot report", what="read the pilot report")
