"""Tests of services.pilot_report: every figure and table of the report against the hand-worked pilot."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from services import pilot_report as pr
from tests.core.stats import reader_study_pilot as pilot
from tests.db.pilot_factory import run_pilot

N_BOOT = 300


@pytest.fixture(scope="module")
def pilot_db(tmp_path_factory):
    """A database with the pilot read through the service (built once for this module)."""
    from db import repository as repo
    from db.session import make_engine, make_session_factory

    url = f"sqlite:///{tmp_path_factory.mktemp('pilot') / 'pilot.db'}"
    rounds, repo._BCRYPT_ROUNDS = repo._BCRYPT_ROUNDS, 4
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        with factory.begin() as s:
            admin = repo.create_user(s, "admin", "Ada Admin", "admin", "admin-pass-1")
            people = {"admin": admin.id}
            for name, role in [("rad1", "radiologist"), ("rad2", "radiologist"), ("rad3", "radiologist"),
                               ("lead", "lead"), ("coord", "coordinator")]:
                people[name] = repo.create_user(s, name, f"Dr {name}", role, f"{name}-pass-1", actor=admin).id
        yield url, factory, people, run_pilot(factory, people)
    finally:
        repo._BCRYPT_ROUNDS = rounds
        engine.dispose()


@pytest.fixture(scope="module")
def pilot_run(pilot_db):
    _, _, people, (svc, summary, _, _, _) = pilot_db
    names = {"r1": "Dr rad1", "r2": "Dr rad2", "r3": "Dr rad3", "pooled": "All readers (pooled)"}
    report = pr.make_report(svc, people["coord"], summary.list_id, n_boot=N_BOOT, seed=3)
    return svc, summary, report, names


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, name
    return found[0]


class TestFigures:
    def test_sensitivity_and_specificity_figure(self, pilot_run):
        _, _, report, names = pilot_run
        fig = report.figures["accuracy"]
        for phase in ("unaided", "aided"):
            for metric, pick in (("sensitivity", lambda tp, fn, tn, fp: tp / (tp + fn)),
                                 ("specificity", lambda tp, fn, tn, fp: tn / (tn + fp))):
                t = trace(fig, f"{metric} {phase}")
                assert list(t.x) == [names[r] for r in ("r1", "r2", "r3", "pooled")]
                want = [pick(*pilot.CONFUSION[(r, phase)]) for r in ("r1", "r2", "r3", "pooled")]
                assert list(t.y) == pytest.approx(want)

    def test_roc_figure_ends_and_areas(self, pilot_run):
        _, _, report, names = pilot_run
        fig = report.figures["roc"]
        import numpy as np

        for r in ("r1", "r2", "r3"):
            for phase in ("unaided", "aided"):
                t = trace(fig, f"{names[r]} {phase}")
                assert (t.x[0], t.y[0], t.x[-1], t.y[-1]) == (0, 0, 1, 1)
                assert np.trapezoid(t.y, t.x) == pytest.approx(pilot.AUC[(r, phase)])

    def test_changes_of_mind_figure(self, pilot_run):
        _, _, report, names = pilot_run
        fig = report.figures["changes"]
        order = ("r1", "r2", "r3", "pooled")
        for change, col in (("wrong->right", 1), ("right->wrong", 2)):
            for ai in ("AI right", "AI wrong"):
                t = trace(fig, f"{change} ({ai})")
                assert list(t.x) == [names[r] for r in order]
                assert list(t.y) == [pilot.CHANGES[(r, ai)][col] for r in order]

    def test_time_figure(self, pilot_run):
        _, _, report, names = pilot_run
        for phase in ("unaided", "aided"):
            t = trace(report.figures["times"], phase)
            assert list(t.y) == pytest.approx([pilot.TIMES[(r, phase)][0] for r in ("r1", "r2", "r3", "pooled")])


class TestTables:
    def test_accuracy_table_text(self, pilot_run):
        _, _, report, names = pilot_run
        acc = report.tables["accuracy"].set_index(["reader", "phase"])
        for (r, phase), (tp, fn, tn, fp) in pilot.CONFUSION.items():
            row = acc.loc[(names[r], phase)]
            assert row["TP / FN / TN / FP"] == f"{tp} / {fn} / {tn} / {fp}"
            assert row["sensitivity"].startswith(f"{tp / (tp + fn):.3f} [")
            assert row["accuracy"].startswith(f"{(tp + tn) / (tp + fn + tn + fp):.3f} [")
            assert row["ROC AUC"].startswith(f"{pilot.AUC[(r, phase)]:.3f} [")

    def test_kappa_automation_bias_times_and_sus(self, pilot_run):
        _, _, report, names = pilot_run
        kappa = report.tables["kappa"].set_index(["reader", "phase"])
        for (r, phase), k in pilot.KAPPA.items():
            assert kappa.loc[(names[r], phase), "Cohen's kappa"] == f"{k:.3f}"
        ab = report.tables["automation_bias"].set_index("reader")
        for r, rate in pilot.AUTOMATION_BIAS.items():
            assert ab.loc[names[r], "automation-bias rate"] == f"{rate:.3f}"
        assert ab.loc[names["pooled"], "cases with AI wrong"] == 9
        times = report.tables["times"].set_index(["reader", "phase"])
        for (r, phase), (mean, median) in pilot.TIMES.items():
            assert times.loc[(names[r], phase), "mean (s)"] == f"{mean:.1f}"
            assert times.loc[(names[r], phase), "median (s)"] == f"{median:.1f}"
        part = report.tables["participants"].set_index("reader")
        for r, score in pilot.SUS.items():
            assert part.loc[names[r], "SUS (latest)"] == f"{score:.1f}"
        assert part.loc[names["r1"], "cases read"] == "20 of 20"
        # the aided-minus-unaided AUC is the MRMC analysis' now (the bootstrap table duplicated it)
        assert "auc_difference" not in report.tables
        diff = report.mrmc.analyses[0].result.difference("aided", "unaided")
        assert diff.estimate == pytest.approx(pilot.AUC_DIFFERENCE, abs=1e-12)

    def test_cases_table(self, pilot_run):
        _, _, report, _ = pilot_run
        cases = report.tables["cases"].set_index("reference")
        assert cases.loc["malignant", "cases"] == 8 and cases.loc["malignant", "source: pathology"] == 8
        assert cases.loc["benign", "source: follow-up"] == 6 and cases.loc["none", "cases"] == 0
        # AI right on 7 of 8 malignant (8 missed), 5 of 6 benign (14 called malignant), 5 of 6 normal (20 benign)
        assert cases["AI says the same"].tolist() == [5, 5, 7, 0]


class TestHtmlAndCsv:
    def test_html_is_self_contained_and_shows_the_numbers(self, pilot_run):
        _, _, report, _ = pilot_run
        page = report.html
        assert page.startswith("<!DOCTYPE html>") and page.count("plotly.js v") >= 1
        assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inline, nothing is fetched
        for heading in ("1. Participants", "2. Cases and reference standard", "3. Results",
                        "4. Multi-reader multi-case analysis", "5. Figures", "6. Limitations"):
            assert heading in page
        assert f"{pilot.KAPPA[('pooled', 'unaided')]:.3f}" in page
        assert f"{pilot.AUTOMATION_BIAS['pooled']:.3f}" in page
        assert "Obuchowski-Rockette-Hillis analysis of section 4, with random readers and random cases" in page
        assert "No reference lesions: enter them on Reading lists" in page  # wAFROC: what is missing
        assert "20 cases, 20 with a reference standard, 8 malignant, read by 3 reader(s)" in page

    def test_csv_has_every_read(self, pilot_run):
        _, _, report, _ = pilot_run
        df = pd.read_csv(io.StringIO(report.reads_csv))
        assert list(df.columns) == list(pr.READS_CSV_COLUMNS)
        assert len(df) == 121 and df["current"].sum() == 120
        assert (df.loc[df["finding"] == "malignant", "rating"] >= 4).all()


class TestCli:
    def test_writes_the_report_and_csv(self, pilot_db, tmp_path, capsys):
        out = tmp_path / "report.html"
        rc = pr.main(["--db-url", pilot_db[0], "--list", "pilot a", "--out", str(out), "--n-boot", "50"])
        assert rc == 0
        assert "3. Results" in out.read_text(encoding="utf-8")
        assert len(pd.read_csv(tmp_path / "report.csv")) == 121
        assert capsys.readouterr().out.split() == [str(out), str(tmp_path / "report.csv")]

    def test_unknown_list(self, pilot_db, tmp_path, capsys):
        rc = pr.main(["--db-url", pilot_db[0], "--list", "nope", "--out", str(tmp_path / "r.html")])
        assert rc == 1 and "no reading list named 'nope'" in capsys.readouterr().err
