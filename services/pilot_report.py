"""The pilot report of a reading list: a self-contained HTML file and a CSV of every read.

Laid out like a reader-study report: participants, cases and reference standard, results
tables (``core.stats.reader_metrics``), the multi-reader multi-case analysis (``services.pilot_mrmc``:
Obuchowski-Rockette-Hillis for the ROC AUC of the malignancy rating and, where reference lesions
exist, wAFROC of the lesion marks; the plain sentence; the sample size of the next study),
figures (plotly, the plotly.js library embedded once with ``include_plotlyjs=True`` so the file
opens offline), limitations, and definitions. The page is the Jinja2 template
``services/templates/pilot_report.html.j2``. The CSV of every read (superseded ones too, flagged
``current``) and the pilot's data in the MRMC layouts (ROC reads CSV, FROC truth and marks CSV,
RJafroc's Excel workbooks) are also embedded in the HTML as download links (``data:`` URIs).

The case-bootstrap interval of the reader-averaged AUC difference that earlier versions showed
is gone: the MRMC analysis gives that difference with a jackknife interval under random readers
(the generalisable one) and under fixed readers (what the bootstrap estimated), so it was a
duplicate. The per-reader bootstrap intervals of sensitivity, specificity, accuracy and AUC stay.

Command line (same report from a database URL)::

    python -m services.pilot_report --db-url sqlite:///var/lungreview.db --list "Pilot A" --out report.html

writes ``report.html`` and ``report.csv`` (``--csv`` to choose) and prints the two paths
(``--effect 0.05`` adds the sample size at that effect). The CLI reads as the database's owner
(no sign-in); the dashboard page passes the signed-in viewer, who must be a coordinator, lead or admin.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import pandas as pd
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.domain import APP_VERSION, CLASS_NAMES, DISCLAIMER
from core.stats import lesions as sl
from core.stats import reader_metrics as rm
from services import pilot_mrmc as pm
from services.reader_study import ReaderStudyService, StudyData

#: Colours of the two phases in every figure.
PHASE_COLOURS = {"unaided": "#1f77b4", "aided": "#d62728"}
#: Columns of the CSV of every read, in order.
READS_CSV_COLUMNS: tuple[str, ...] = (
    "read_id", "case_id", "study_key", "series_key", "reader_id", "reader", "phase", "finding", "confidence",
    "rating", "seconds", "current", "supersedes_id", "created_at", "ai_label", "reference", "reference_source",
)
#: Interval width above which the limitations call an estimate imprecise.
WIDE_INTERVAL = 0.2


@dataclass(frozen=True)
class PilotReport:
    """A built report: the HTML text, the reads CSV text, the results, display tables, figures,
    and the MRMC section (``services.pilot_mrmc.MrmcSection``: analyses, sample sizes, downloads)."""

    html: str
    reads_csv: str
    results: rm.ReaderStudyResults
    tables: dict[str, pd.DataFrame]
    figures: dict[str, go.Figure]
    mrmc: pm.MrmcSection


def _names(data: StudyData) -> dict:
    names = dict(zip(data.readers["reader_id"], data.readers["reader"], strict=True))
    names[rm.POOLED] = "All readers (pooled)"
    return names


def reads_csv(data: StudyData) -> str:
    """CSV text (UTF-8, header, ISO times in UTC) of every read with its case's AI label and reference."""
    df = data.reads.merge(data.cases[["case_id", "series_key", "ai_label", "reference", "reference_source"]],
                          on="case_id", how="left")
    df["rating"] = [rm.malignancy_rating(f, c) for f, c in zip(df["finding"], df["confidence"], strict=True)]
    return df.reindex(columns=list(READS_CSV_COLUMNS)).to_csv(index=False)


def _ci(point: float, lo: float, hi: float) -> str:
    if pd.isna(point):
        return "n/a"
    if pd.isna(lo):
        return f"{point:.3f}"
    return f"{point:.3f} [{lo:.3f} to {hi:.3f}]"


def display_tables(res: rm.ReaderStudyResults, data: StudyData) -> dict[str, pd.DataFrame]:
    """The report's tables with reader names and formatted numbers (3 decimals; [95 % interval]).

    Returns:
        dict with keys ``participants``, ``cases``, ``accuracy``, ``kappa``, ``changes``,
        ``automation_bias``, ``times`` (the aided-minus-unaided AUC difference is in the MRMC
        section, ``services.pilot_mrmc``).
    """
    names = _names(data)
    sus = dict(zip(res.sus["reader_id"], res.sus["sus_score"], strict=True))
    part = data.readers.assign(sus_score=data.readers["reader_id"].map(sus))
    part = pd.concat([part, pd.DataFrame([{"reader_id": rm.POOLED, "reader": names[rm.POOLED],
                                           "n_done": int(part["n_done"].sum()), "total": int(part["total"].sum()),
                                           "sus_score": sus.get(rm.POOLED)}])], ignore_index=True)
    participants = pd.DataFrame({"reader": part["reader"], "cases read": part["n_done"].astype(str) + " of "
                                 + part["total"].astype(str),
                                 "SUS (latest)": part["sus_score"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.1f}")})
    cases = data.cases
    ref = cases["reference"].fillna("none")
    case_rows = []
    for finding in [*CLASS_NAMES, "none"]:
        sub = cases[ref == finding]
        case_rows.append({"reference": finding, "cases": len(sub),
                          **{f"source: {s}": int((sub["reference_source"] == s).sum())
                             for s in ("pathology", "follow-up", "consensus")},
                          "AI says the same": int((sub["ai_label"] == finding).sum())})
    acc = res.accuracy
    accuracy = pd.DataFrame({
        "reader": acc["reader_id"].map(names), "phase": acc["phase"], "reads": acc["n_reads"],
        "TP / FN / TN / FP": [f"{a} / {b} / {c} / {d}" for a, b, c, d in
                              zip(acc["tp"], acc["fn"], acc["tn"], acc["fp"], strict=True)],
        **{m: [_ci(p, lo, hi) for p, lo, hi in zip(acc[m], acc[f"{m}_low"], acc[f"{m}_high"], strict=True)]
           for m in rm.INTERVAL_METRICS},
    }).rename(columns={"auc": "ROC AUC"})
    k = res.kappa
    kappa = pd.DataFrame({"reader": k["reader_id"].map(names), "phase": k["phase"], "reads": k["n_reads"],
                          "agreement with AI (%)": k["percent_agreement"].map(lambda v: f"{v:.1f}"),
                          "Cohen's kappa": k["kappa"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")})
    ch = res.changes
    changes = ch.assign(reader=ch["reader_id"].map(names))[["reader", "ai", "n_cases", *rm.CHANGES]]
    ab = res.automation_bias
    automation = pd.DataFrame({"reader": ab["reader_id"].map(names), "cases with AI wrong": ab["n_ai_wrong"],
                               "right -> wrong with AI wrong": ab["right_to_wrong_ai_wrong"],
                               "automation-bias rate": ab["rate"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")})
    t = res.times
    times = pd.DataFrame({"reader": t["reader_id"].map(names), "phase": t["phase"], "reads": t["n_reads"],
                          "mean (s)": t["mean_s"].map(lambda v: f"{v:.1f}"),
                          "median (s)": t["median_s"].map(lambda v: f"{v:.1f}")})
    return {"participants": participants, "cases": pd.DataFrame(case_rows), "accuracy": accuracy,
            "kappa": kappa, "changes": changes, "automation_bias": automation, "times": times}


def figures(res: rm.ReaderStudyResults, data: StudyData) -> dict[str, go.Figure]:
    """The report's plotly figures.

    Returns:
        dict: ``accuracy`` (sensitivity and specificity per reader and phase with 95 % intervals;
        one trace per phase and metric, named "<metric> <phase>", y in reader order with pooled
        last), ``roc`` (empirical ROC curve per reader and phase: a colour per reader, dashed
        unaided, solid aided), ``changes`` (stacked counts of
        changes of mind per reader, AI right / AI wrong), ``times`` (mean seconds per case).
    """
    names = _names(data)
    acc = res.accuracy
    fig_acc = make_subplots(rows=1, cols=2, subplot_titles=("Sensitivity (malignant)", "Specificity"))
    for col, metric in enumerate(("sensitivity", "specificity"), start=1):
        for phase in rm.PHASES:
            g = acc[acc["phase"] == phase]
            if g.empty:
                continue
            fig_acc.add_trace(go.Scatter(
                x=g["reader_id"].map(names).tolist(), y=g[metric].tolist(), mode="markers", name=f"{metric} {phase}",
                marker={"color": PHASE_COLOURS[phase], "size": 10}, legendgroup=phase, showlegend=col == 1,
                error_y={"type": "data", "symmetric": False, "array": (g[f"{metric}_high"] - g[metric]).tolist(),
                         "arrayminus": (g[metric] - g[f"{metric}_low"]).tolist()}), row=1, col=col)
    fig_acc.update_yaxes(range=[0, 1.05])
    fig_acc.update_layout(height=420, title="Sensitivity and specificity with 95 % bootstrap intervals")

    fig_roc = go.Figure()
    palette = qualitative.Plotly
    order = {r: i for i, r in enumerate(data.readers["reader_id"])}
    for (reader, phase), g in res.roc.groupby(["reader_id", "phase"], sort=True):
        fig_roc.add_trace(go.Scatter(x=g["fpr"].tolist(), y=g["tpr"].tolist(), mode="lines+markers",
                                     name=f"{names.get(reader, reader)} {phase}",
                                     line={"color": palette[order.get(reader, 0) % len(palette)],
                                           "dash": "dash" if phase == "unaided" else "solid"}))
    fig_roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "grey", "dash": "dot"},
                                 name="chance", hoverinfo="skip"))
    fig_roc.update_layout(height=460, title="ROC curves of the 1-5 malignancy rating", xaxis_title="1 - specificity",
                          yaxis_title="sensitivity", xaxis_range=[0, 1], yaxis_range=[0, 1.02])

    ch = res.changes[res.changes["ai"] != "all"]
    fig_ch = go.Figure()
    for change in rm.CHANGES[:2]:
        for ai in ("AI right", "AI wrong"):
            g = ch[ch["ai"] == ai]
            fig_ch.add_trace(go.Bar(x=g["reader_id"].map(names).tolist(), y=g[change].tolist(),
                                    name=f"{change} ({ai})"))
    fig_ch.update_layout(barmode="group", height=420, title="Changes of mind from the unaided to the aided read",
                         yaxis_title="cases")

    t = res.times
    fig_t = go.Figure()
    for phase in rm.PHASES:
        g = t[t["phase"] == phase]
        if not g.empty:
            fig_t.add_trace(go.Bar(x=g["reader_id"].map(names).tolist(), y=g["mean_s"].tolist(), name=phase,
                                   marker_color=PHASE_COLOURS[phase]))
    fig_t.update_layout(barmode="group", height=400, title="Mean time per case", yaxis_title="seconds")
    return {"accuracy": fig_acc, "roc": fig_roc, "changes": fig_ch, "times": fig_t}


def limitations(res: rm.ReaderStudyResults, data: StudyData) -> list[str]:
    """Sentences for the limitations section (case counts, interval widths, missing data, MRMC)."""
    out = [f"{res.n_cases} cases, {res.n_with_reference} with a reference standard, {res.n_malignant} malignant, "
           f"read by {len(data.readers)} reader(s): a pilot of this size estimates proportions only roughly."]
    acc = res.accuracy
    if not acc.empty:
        width = (acc["sensitivity_high"] - acc["sensitivity_low"]).max()
        if pd.notna(width):
            out.append(f"The widest 95 % interval of a sensitivity is {width:.2f} wide"
                       + (" (wider than 0.2: differences between phases or readers are not resolved)."
                          if width > WIDE_INTERVAL else "."))
    missing = res.n_cases - res.n_with_reference
    if missing:
        out.append(f"{missing} case(s) have no reference standard and are left out of sensitivity, specificity, "
                   "accuracy, ROC AUC and the changes of mind.")
    unfinished = data.readers[data.readers["n_done"] < data.readers["total"]]
    if len(unfinished):
        out.append(f"{len(unfinished)} reader(s) have not finished the list.")
    out.append("The intervals of sensitivity, specificity, accuracy and ROC AUC per reader are percentile bootstrap "
               f"intervals over cases ({res.n_boot} replicates, seed {res.seed}), which treat the readers as fixed. "
               "The comparison of the aided with the unaided step is the Obuchowski-Rockette-Hillis analysis of "
               "section 4, with random readers and random cases: it generalises to other readers and cases like "
               "these.")
    out.append("Unaided and aided reads are sequential on the same case in one session, so the aided read is "
               "not independent of the unaided one; the AI result is that of one model version.")
    return out


def _table_html(df: pd.DataFrame, test_id: str) -> Markup:
    """A display table as HTML (cells escaped by pandas), marked safe for the template."""
    return Markup(df.to_html(index=False, escape=True, border=0, classes="t", table_id=test_id))


@lru_cache(maxsize=1)
def _templates() -> Environment:
    """The Jinja2 environment of ``services/templates`` (HTML autoescaped)."""
    return Environment(loader=PackageLoader("services", "templates"), autoescape=select_autoescape(["j2"]),
                       undefined=StrictUndefined, keep_trailing_newline=False)


def _data_uri(d: pm.Download) -> str:
    raw = d.content.encode("utf-8") if isinstance(d.content, str) else d.content
    return f"data:{d.mime};base64," + base64.b64encode(raw).decode("ascii")


def mrmc_view(section: pm.MrmcSection, data: StudyData) -> list[dict]:
    """The MRMC section as the template shows it: per figure of merit its title, missing lines,
    tables (HTML), sentence, notes and sample sizes."""
    out = []
    for n, a in enumerate(section.analyses, start=1):
        key = "roc" if a.fom == pm.mrmc.ROC_AUC else "wafroc"
        view = {"key": key, "title": f"4.{n} {a.fom}", "missing": list(a.missing), "sentence": a.sentence,
                "notes": list(a.notes), "tables": {}, "sizes": []}
        if a.result is not None:
            view["tables"] = {"foms": _table_html(pm.fom_table(a, data), f"mrmc-{key}-foms"),
                              "tests": _table_html(pm.test_table(a), f"mrmc-{key}-tests"),
                              "differences": _table_html(pm.difference_table(a), f"mrmc-{key}-differences"),
                              "components": _table_html(pm.components_table(a), f"mrmc-{key}-components")}
            for i, ps in enumerate(a.sizes):
                item = {"label": ps.label, "effect": ps.effect, "problem": ps.problem}
                if ps.size is not None:
                    item.update(power=_table_html(pm.power_table(ps.size), f"power-{key}-{i}"),
                                needed=_table_html(pm.cases_needed_table(ps.size), f"needed-{key}-{i}"),
                                smallest=pm.smallest_text(ps.size))
                view["sizes"].append(item)
        out.append(view)
    return out


def render_html(res: rm.ReaderStudyResults, data: StudyData, tables: dict[str, pd.DataFrame],
                figs: dict[str, go.Figure], csv_text: str, generated_at: datetime,
                section: pm.MrmcSection | None = None) -> str:
    """The self-contained HTML document (plotly.js embedded once; no external resources).

    Rendered from ``services/templates/pilot_report.html.j2`` (Jinja2, every value escaped
    except the tables and figures, which pandas and plotly write as HTML).
    """
    section = section if section is not None else pm.build_section(data)
    lst = data.list
    fig_html = [Markup(fig.to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{key}",
                                   config={"displaylogo": False}))
                for i, (key, fig) in enumerate(figs.items())]
    csv_uri = "data:text/csv;base64," + base64.b64encode(csv_text.encode("utf-8")).decode("ascii")
    mode = {"ai_after_unaided": "AI shown after an unaided read", "ai_at_once": "AI shown at once",
            "no_ai": "no AI"}.get(lst.mode, lst.mode)
    files = [{"label": d.label, "file_name": d.file_name, "uri": _data_uri(d), "key": k}
             for k, d in section.downloads.items()]
    marks = {"counts": _table_html(section.lesion_counts, "lesion-counts"),
             "changes": _table_html(section.mark_changes, "mark-changes")} if len(data.marks) else {}
    return _templates().get_template("pilot_report.html.j2").render(
        lst=lst, res=res, mode=mode, app_version=APP_VERSION, disclaimer=DISCLAIMER, generated_at=generated_at,
        tables={k: _table_html(df, k) for k, df in tables.items()}, figures=fig_html,
        limitations=limitations(res, data), csv_uri=csv_uri, n_reads=len(data.reads),
        mrmc=mrmc_view(section, data), effect=section.effect, marks=marks, rules=sl.RULES, files=files,
        file_problems=section.download_problems, n_lesions=len(data.lesions))


def build_report(data: StudyData, *, n_boot: int = rm.N_BOOT, seed: int = rm.SEED,
                 generated_at: datetime | None = None, effect: float | None = None) -> PilotReport:
    """Analyse ``data`` and build the report.

    Args:
        data: from ``ReaderStudyService.study_data``.
        n_boot, seed: bootstrap replicates and seed (``core.stats.reader_metrics``).
        generated_at: time printed in the report (default now, UTC).
        effect: difference of figures of merit the next study should detect (the coordinator's
            number, e.g. 0.05); None: the sample size at the observed effect only.

    Returns:
        :class:`PilotReport`.

    Raises:
        ValueError: ``effect`` is not a finite number.
    """
    res = rm.analyse(data.reads, data.cases, data.sus, data.readers["reader_id"].tolist(), n_boot=n_boot, seed=seed)
    tables = display_tables(res, data)
    figs = figures(res, data)
    csv_text = reads_csv(data)
    section = pm.build_section(data, effect=effect)
    page = render_html(res, data, tables, figs, csv_text, generated_at or datetime.now(UTC), section)
    return PilotReport(html=page, reads_csv=csv_text, results=res, tables=tables, figures=figs, mrmc=section)


def make_report(service: ReaderStudyService, viewer, list_id: int, *, n_boot: int = rm.N_BOOT,
                seed: int = rm.SEED, effect: float | None = None) -> PilotReport:
    """Read one list through the service (an "export" audit event) and build its report.

    Args:
        viewer: a coordinator, lead or admin; None for the CLI (database owner).
        effect: see :func:`build_report`.

    Raises:
        db.repository.PermissionDenied, db.repository.NotFoundError.
    """
    return build_report(service.study_data(viewer, list_id, audit=True), n_boot=n_boot, seed=seed, effect=effect)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: write the HTML report and the reads CSV of one reading list."""
    from pathlib import Path

    from db.repository import RepositoryError
    from db.session import DatabaseError, make_engine, make_session_factory

    p = argparse.ArgumentParser(prog="python -m services.pilot_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--db-url", help="SQLAlchemy database URL (default: LUNGREVIEW_DB_URL / var/lungreview.db)")
    p.add_argument("--list", required=True, help="name of the reading list")
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--csv", type=Path, help="CSV of every read (default: --out with .csv)")
    p.add_argument("--n-boot", type=int, default=rm.N_BOOT, help=f"bootstrap replicates (default {rm.N_BOOT})")
    p.add_argument("--seed", type=int, default=rm.SEED, help=f"bootstrap seed (default {rm.SEED})")
    p.add_argument("--effect", type=float, default=None,
                   help="difference of figures of merit the next study should detect (sample size at it)")
    args = p.parse_args(argv)
    if args.effect is not None and not (args.effect == args.effect and abs(args.effect) != float("inf")):
        p.error("--effect must be a finite number, e.g. 0.05")
    try:
        engine = make_engine(args.db_url)
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        service = ReaderStudyService(make_session_factory(engine))
        summary = service.find_list(None, args.list)
        report = make_report(service, None, summary.list_id, n_boot=args.n_boot, seed=args.seed, effect=args.effect)
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    csv_path = args.csv or args.out.with_suffix(".csv")
    args.out.write_text(report.html, encoding="utf-8")
    csv_path.write_text(report.reads_csv, encoding="utf-8")
    print(args.out)
    print(csv_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
