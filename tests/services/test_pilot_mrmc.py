"""Tests of the MRMC section of the pilot report (services.pilot_mrmc, services.pilot_report) on the
simulated 3-reader pilot with reference lesions and lesion marks, every wAFROC figure worked out by hand."""

from __future__ import annotations

import dataclasses
import io
import re

import pandas as pd
import pytest
from markupsafe import escape

from core.stats import lesions as sl
from core.stats import mrmc, mrmc_io
from services import pilot_mrmc as pm
from services import pilot_report as pr
from tests.core.stats import reader_study_pilot as pilot
from tests.db.pilot_factory import run_pilot

N_BOOT = 100
# Every malignant case (1-8) has one reference lesion on slice 1 at (100, 100), 10 mm across
# (radius 5 mm = 7.1 pixels at 0.7 mm); cases 9-20 have none (K1 = 12 lesion-free, K2 = 8 lesions).
LESION = {"slice_index": 1, "x": 100.0, "y": 100.0, "diameter_mm": 10.0}
ON = (1, 102.0, 100.0)      # 2 px = 1.4 mm from the lesion centre: a hit
NEAR = (1, 104.0, 100.0)    # 2.8 mm: a hit too
FAR = (0, 300.0, 300.0)     # nowhere near: NL
UNAIDED = {  # reader -> case -> [(slice, x, y, rating)]
    "r1": {**{c: [(*ON, 4)] for c in range(2, 7)}, 1: [(*ON, 4), (*NEAR, 2)], 9: [(*FAR, 3)], 10: [(*FAR, 2)]},
    "r2": {1: [(*ON, 5)], 2: [(*ON, 5)], 3: [(*ON, 5), (*FAR, 5)], 4: [(*ON, 5)], 15: [(*FAR, 4)]},
    "r3": {c: [(*ON, 3)] for c in range(1, 9)},
}
# Aided step (starts from the copies): r1 takes the AI finding on case 7 (rating 4) and deletes
# the NL mark on case 10; r2 re-rates the NL mark on case 15 to 1 and adds marks on cases 5, 6
# (rating 5); r3 changes nothing.
#
# wAFROC = sum over (lesion-free case, lesion) of psi(highest NL rating on the case, lesion rating)
# / (12 x 8); psi = 1 if the lesion is rated higher, 1/2 on a tie (-inf ties -inf), else 0.
# r1 unaided: lesions 1-6 rated 4 (case 1: the 2 is dropped), 7-8 unmarked; NL 3 (case 9), 2 (10),
#   -inf on 10 cases: 6 x 12 + 2 x (10 x 1/2) = 82.
# r1 aided:   lesions 1-7 rated 4, 8 unmarked; NL 3 (9), -inf on 11: 7 x 12 + 11/2 = 89.5.
# r2 unaided: lesions 1-4 rated 5 (the NL on case 3 has lesions: not used); NL 4 (15), -inf on 11:
#   4 x 12 + 4 x 11/2 = 70.
# r2 aided:   lesions 1-6 rated 5; NL 1 (15): 6 x 12 + 2 x 11/2 = 83.
# r3 both:    lesions 1-8 rated 3, no NL: 8 x 12 = 96.
WAFROC = {("r1", "unaided"): 82 / 96, ("r1", "aided"): 89.5 / 96, ("r2", "unaided"): 70 / 96,
          ("r2", "aided"): 83 / 96, ("r3", "unaided"): 1.0, ("r3", "aided"): 1.0}
# per reader and step: marks, LL, NL, dropped, lesions localised, AI findings taken
COUNTS = {("r1", "unaided"): (9, 6, 2, 1, 6, 0), ("r1", "aided"): (9, 7, 1, 1, 7, 1),
          ("r2", "unaided"): (6, 4, 2, 0, 4, 0), ("r2", "aided"): (8, 6, 2, 0, 6, 0),
          ("r3", "unaided"): (8, 8, 0, 0, 8, 0), ("r3", "aided"): (8, 8, 0, 0, 8, 0)}
# unaided marks, copies kept, re-rated, deleted, added by hand, AI findings taken
CHANGES = {"r1": (9, 8, 0, 1, 0, 1), "r2": (6, 5, 1, 0, 2, 0), "r3": (8, 8, 0, 0, 0, 0)}
NAMES = {"r1": "Dr rad1", "r2": "Dr rad2", "r3": "Dr rad3"}


def lesion_pilot(factory, people):
    """The pilot of tests/core/stats/reader_study_pilot.py with the lesions and marks above."""
    from db import repository as repo
    from db.schema import ReadingListCase

    ai = {}

    def before(svc, case_of):
        for c in range(1, 9):
            svc.add_reference_lesion(people["coord"], case_of[c], **LESION)
        with factory.begin() as s:
            case = s.get(ReadingListCase, case_of[7])
            det = repo.record_ai_nodules(
                s, inference_id=case.inference_id, model_id="nodule3d", model_sha256="d" * 64, latency_ms=1.0,
                nodules=[{"rank": 1, "centre_voxel": [1, 100, 101], "centre_mm": [0.0, 0.0, 0.0], "diameter_mm": 9.0,
                          "p_nodule": 0.9, "malignancy": 4.0, "lobulation": 1.0, "spiculation": 1.0,
                          "slice_index": 1, "is_mass": False}])
            ai["nodule"] = det.nodules[0].id

    def on_step(svc, name, uid, c, case_id, step):
        if step == "unaided":
            for z, x, y, rating in UNAIDED[name].get(c, []):
                svc.add_mark(uid, case_id, step="unaided", slice_index=z, x=x, y=y, rating=rating)
            return
        copies = {(m.x, m.y): m for m in svc.reader_case(uid, case_id).step_marks("aided")}
        if (name, c) == ("r1", 7):
            svc.take_ai_finding(uid, case_id, ai["nodule"], rating=4)
        elif (name, c) == ("r1", 10):
            svc.delete_mark(uid, copies[FAR[1:]].mark_id)
        elif (name, c) == ("r2", 15):
            svc.rerate_mark(uid, copies[FAR[1:]].mark_id, rating=1)
        elif name == "r2" and c in (5, 6):
            svc.add_mark(uid, case_id, step="aided", slice_index=ON[0], x=ON[1], y=ON[2], rating=5)

    return run_pilot(factory, people, before_cases=before, on_step=on_step)


@pytest.fixture(scope="module")
def pilot_db(tmp_path_factory):
    """A database with the lesion pilot read through the service (built once for this module)."""
    from db import repository as repo
    from db.session import make_engine, make_session_factory

    url = f"sqlite:///{tmp_path_factory.mktemp('mrmc_pilot') / 'pilot.db'}"
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
        yield url, factory, people, lesion_pilot(factory, people)
    finally:
        repo._BCRYPT_ROUNDS = rounds
        engine.dispose()


@pytest.fixture(scope="module")
def data(pilot_db):
    _, _, people, (svc, summary, *_rest) = pilot_db
    return svc.study_data(people["coord"], summary.list_id)


@pytest.fixture(scope="module")
def report(pilot_db):
    _, _, people, (svc, summary, *_rest) = pilot_db
    return pr.make_report(svc, people["coord"], summary.list_id, n_boot=N_BOOT, seed=3, effect=0.05)


def reader_label(data, name: str) -> str:
    ids = dict(zip(data.readers["reader"], data.readers["reader_id"], strict=True))
    return mrmc.label(int(ids[NAMES[name]]))


class TestAnalyses:
    def test_roc_auc_foms_are_the_hand_worked_ones_and_the_sentence_quotes_them(self, report, data):
        roc, _ = report.mrmc.analyses
        assert roc.fom == mrmc.ROC_AUC and roc.missing == ()
        r = roc.result
        assert r.treatments == ("aided", "unaided") and (r.n_normal, r.n_abnormal) == (12, 8)
        for name in pilot.READERS:
            j = r.readers.index(reader_label(data, name))
            for i, step in enumerate(r.treatments):
                assert r.foms[i, j] == pytest.approx(pilot.AUC[(name, step)], abs=1e-12)
        d = r.difference("aided", "unaided")
        assert d.estimate == pytest.approx(pilot.AUC_DIFFERENCE, abs=1e-12)
        lo, hi = d.ci95
        assert roc.sentence == (f"With 3 readers and 20 cases the study cannot tell whether the AI helps: aided minus "
                                f"unaided ROC AUC {d.estimate:.2f}, 95 % CI {lo:.2f} to {hi:.2f} (p = {d.p:.2f}; "
                                "random readers and random cases).")

    def test_wafroc_foms_are_the_hand_worked_ones(self, report, data):
        _, wafroc = report.mrmc.analyses
        assert wafroc.fom == mrmc.WAFROC and wafroc.missing == ()
        r = wafroc.result
        assert (r.n_normal, r.n_abnormal) == (12, 8)
        for (name, step), want in WAFROC.items():
            assert r.foms[r.treatments.index(step), r.readers.index(reader_label(data, name))] == pytest.approx(
                want, abs=1e-12)
        means = dict(zip(r.treatments, r.treatment_means, strict=True))
        assert means["aided"] - means["unaided"] == pytest.approx((89.5 + 83 + 96 - 82 - 70 - 96) / 96 / 3)
        assert any("2 mark(s) dropped" in n for n in wafroc.notes)  # r1 case 1, both steps

    def test_sample_size_at_the_observed_and_the_typed_effect(self, report):
        for a in report.mrmc.analyses:
            observed, typed = a.sizes
            assert observed.effect == pytest.approx(a.result.difference("aided", "unaided").estimate)
            assert typed.effect == 0.05 and typed.problem == ""
            assert typed.size.power.shape == (13, 10)
            assert typed.size.readers.tolist() == list(range(3, 16))
            assert typed.size.cases.tolist() == list(range(50, 501, 50))
            if typed.size.smallest is not None:
                j, k = typed.size.smallest
                assert typed.size.cases_needed[typed.size.readers.tolist().index(j)] == k

    def test_lesion_counts_and_mark_changes(self, report):
        counts = report.mrmc.lesion_counts.set_index(["reader", "step"])
        for (name, step), (n, ll, nl, dropped, found, ai) in COUNTS.items():
            row = counts.loc[(NAMES[name], step)]
            assert (row["marks"], row["LL"], row["NL"], row["dropped"], row["lesions localised"],
                    row["AI findings taken"]) == (n, ll, nl, dropped, f"{found} of 8", ai), (name, step)
        changes = report.mrmc.mark_changes.set_index("reader")
        for name, want in CHANGES.items():
            assert tuple(changes.loc[NAMES[name]].tolist()) == want, name


class TestDownloads:
    def test_the_roc_csv_reanalysed_gives_the_same_foms(self, report):
        roc = report.mrmc.analyses[0].result
        reads = mrmc_io.read_reads(io.StringIO(report.mrmc.downloads["roc_csv"].content))
        assert list(reads.columns[:5]) == list(mrmc.ROC_COLUMNS) and len(reads) == 120
        again = mrmc.analyse_roc(reads, treatment_order=("aided", "unaided"))
        assert again.readers == roc.readers and (again.foms == roc.foms).all()
        assert again.random.f == pytest.approx(roc.random.f, rel=1e-12)

    def test_the_froc_csvs_reanalysed_give_the_same_foms(self, report, data):
        wafroc = report.mrmc.analyses[1].result
        truth = mrmc_io.read_truth(io.StringIO(report.mrmc.downloads["froc_truth_csv"].content))
        marks = mrmc_io.read_marks(io.StringIO(report.mrmc.downloads["froc_marks_csv"].content))
        assert len(truth) == 20 and (truth["lesion"].astype(int) > 0).sum() == 8
        assert len(marks) == sum(n - d for n, _, _, d, _, _ in COUNTS.values())  # dropped marks are left out
        again = mrmc.analyse_froc(truth, marks, readers=data.readers["reader_id"].tolist(),
                                  treatments=["unaided", "aided"], treatment_order=("aided", "unaided"))
        assert (again.foms == wafroc.foms).all()

    def test_the_rjafroc_workbooks_hold_the_same_data(self, report, data):
        roc, wafroc = (a.result for a in report.mrmc.analyses)
        sheets = mrmc_io.read_rjafroc_excel(report.mrmc.downloads["froc_xlsx"].content)
        truth = pd.DataFrame({"case": sheets["Truth"]["CaseID"], "lesion": sheets["Truth"]["LesionID"],
                              "weight": [None if les == 0 else w for les, w in
                                         zip(sheets["Truth"]["LesionID"], sheets["Truth"]["Weight"], strict=True)]})
        nl = sheets["NL"].rename(columns={"ReaderID": "reader", "ModalityID": "treatment", "CaseID": "case",
                                          "FP_Rating": "rating"}).assign(lesion=0)
        ll = sheets["LL"].rename(columns={"ReaderID": "reader", "ModalityID": "treatment", "CaseID": "case",
                                          "LesionID": "lesion", "TP_Rating": "rating"})
        marks = pd.concat([nl, ll], ignore_index=True)
        again = mrmc.analyse_froc(truth, marks, readers=data.readers["reader_id"].tolist(),
                                  treatments=["unaided", "aided"], treatment_order=("aided", "unaided"))
        assert (again.foms == wafroc.foms).all()
        sheets = mrmc_io.read_rjafroc_excel(report.mrmc.downloads["roc_xlsx"].content)
        assert len(sheets["NL"]) == 3 * 2 * 12 and len(sheets["LL"]) == 3 * 2 * 8
        assert sorted(sheets["LL"]["TP_Rating"].tolist()) == sorted(
            mrmc_io.read_reads(io.StringIO(report.mrmc.downloads["roc_csv"].content))
            .query("truth == '1'")["rating"].astype(int).tolist())
        assert roc.n_abnormal == 8


class TestWhatIsMissing:
    def test_missing_reads_are_named_instead_of_a_table(self, data):
        reads = data.reads.copy()
        rad2 = int(data.readers.loc[data.readers["reader"] == "Dr rad2", "reader_id"].iloc[0])
        case_id = int(data.cases.loc[data.cases["position"] == 3, "case_id"].iloc[0])
        drop = (reads["reader_id"] == rad2) & (reads["case_id"] == case_id) & (reads["phase"] == "aided")
        section = pm.build_section(dataclasses.replace(data, reads=reads[~drop]))
        for a in section.analyses:
            assert a.result is None
            (line,) = a.missing
            assert "1 reads missing: Dr rad2, aided step, case 3" in line and "fully crossed" in line

    def test_no_reference_standard(self, data):
        cases = data.cases.assign(reference=float("nan"))
        roc, wafroc = pm.build_section(dataclasses.replace(data, cases=cases)).analyses
        assert roc.missing == ("No case has a reference standard: enter it on Reading lists (form or CSV).",)
        assert wafroc.result is not None  # the lesion truth does not need the reference standard

    def test_one_reader(self, data):
        first = int(data.readers["reader_id"].iloc[0])
        one = dataclasses.replace(data, readers=data.readers.iloc[:1], reads=data.reads[data.reads["reader_id"] == first],
                                  marks=data.marks[data.marks["reader_id"] == first])
        for a in pm.build_section(one).analyses:
            assert a.result is None and a.missing[0].startswith("Only 1 reader: the random-reader analysis")

    def test_one_step_only(self, data):
        lst = dataclasses.replace(data.list, mode="ai_at_once")
        at_once = dataclasses.replace(data, list=lst, reads=data.reads[data.reads["phase"] == "aided"],
                                      marks=data.marks[data.marks["step"] == "aided"])
        for a in pm.build_section(at_once).analyses:
            assert a.result is None and "read in one step only (mode ai_at_once)" in a.missing[0]

    def test_lesions_missing_on_a_malignant_case_or_everywhere(self, data):
        case3 = int(data.cases.loc[data.cases["position"] == 3, "case_id"].iloc[0])
        lesions = data.lesions[data.lesions["case_id"] != case3]
        _, wafroc = pm.build_section(dataclasses.replace(data, lesions=lesions)).analyses
        assert wafroc.missing == ("Case(s) 3 have a malignant reference standard but no reference lesion: enter "
                                  "their lesions (a case without reference lesions counts as lesion-free).",)
        section = pm.build_section(dataclasses.replace(data, lesions=data.lesions.iloc[:0]))
        assert section.analyses[1].missing[0].startswith("No reference lesions")
        assert "froc_truth_csv" not in section.downloads and "roc_csv" in section.downloads

    def test_too_few_cases_of_one_truth_state(self, data):
        keep = data.cases[data.cases["position"] <= 9]
        ids = set(keep["case_id"])
        small = dataclasses.replace(data, cases=keep, reads=data.reads[data.reads["case_id"].isin(ids)],
                                    marks=data.marks[data.marks["case_id"].isin(ids)])
        for a in pm.build_section(small).analyses:
            assert a.result is None and "Only 1 case without" in a.missing[0]
            assert "at least 2 cases of each kind" in a.missing[0]

    def test_the_html_shows_what_is_missing_and_no_table(self, data):
        cases = data.cases.assign(reference=float("nan"))
        page = pr.build_report(dataclasses.replace(data, cases=cases), n_boot=20).html
        assert "id='mrmc-roc-missing'" in page and "No case has a reference standard" in page
        assert "mrmc-roc-foms" not in page and "mrmc-wafroc-foms" in page


class TestHtml:
    def test_sections_sentence_rules_and_downloads(self, report):
        page = report.html
        for heading in ("1. Participants", "3. Results", "4. Multi-reader multi-case analysis", "5. Figures",
                        "6. Limitations", "7. Definitions", "8. Data"):
            assert heading in page
        for a in report.mrmc.analyses:
            assert a.sentence in page
        for rule in sl.RULES:
            assert str(escape(rule)) in page  # Jinja escapes the apostrophes
        assert len(re.findall(r"id='file-(roc_csv|roc_xlsx|froc_truth_csv|froc_marks_csv|froc_xlsx)'", page)) == 5
        assert "data:application/vnd.openxmlformats-officedocument.spreadsheetml.sheet;base64," in page
        assert "No maintained Python implementation" not in page
        assert 'id="power-roc-1"' in page and "At the effect you typed (0.050)" in page

    def test_the_bootstrap_auc_difference_table_is_gone(self, report):
        assert "auc_difference" not in report.tables

    def test_cli_takes_an_effect(self, pilot_db, tmp_path, capsys):
        out = tmp_path / "r.html"
        assert pr.main(["--db-url", pilot_db[0], "--list", "Pilot A", "--out", str(out), "--n-boot", "20",
                        "--effect", "0.1"]) == 0
        assert "At the effect you typed (0.100)" in out.read_text(encoding="utf-8")
        with pytest.raises(SystemExit):
            pr.main(["--db-url", pilot_db[0], "--list", "Pilot A", "--out", str(out), "--effect", "nan"])
        assert "--effect must be a finite number" in capsys.readouterr().err
