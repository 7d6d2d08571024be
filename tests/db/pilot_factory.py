"""Runs the hand-worked pilot of tests/core/stats/reader_study_pilot.py through services.reader_study."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db import repository as repo
from services.reader_study import ReaderStudyService
from tests.core.stats import reader_study_pilot as pilot
from tests.db.factories import new_study

MODEL = "basic-cnn-v1"


class Clock:
    """A clock the test moves by hand (timezone-aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_cases(factory, uploader: int, n: int = 20) -> dict[int, int]:
    """Studies 1..n with an inference of MODEL labelled as pilot.AI; returns {case number: study id}."""
    out = {}
    with factory.begin() as s:
        for c in range(1, n + 1):
            study, _ = new_study(s, uploader, f"pilot{c}", ai_label=pilot.AI[c], model_id=MODEL)
            out[c] = study.id
    return out


def run_pilot(factory, people, *, seed: int = 11, before_cases=None, on_step=None):
    """Create the list, enter the reference, read every case as the pilot says, answer SUS.

    Args:
        before_cases: optional ``f(svc, case_of)`` called once the list and reference exist,
            before any read (e.g. to enter reference lesions or AI findings).
        on_step: optional ``f(svc, reader_name, reader_id, case_number, case_id, step)`` called
            in each case after opening it (step "unaided", before the unaided read) and after the
            AI is shown (step "aided", before the aided read), e.g. to place lesion marks.

    Returns:
        (service, list summary, {case number: case id}, {"r1": user id, ...}, clock).
    """
    clock = Clock()
    svc = ReaderStudyService(factory, clock=clock)
    studies = make_cases(factory, people["coord"])
    readers = {"r1": people["rad1"], "r2": people["rad2"], "r3": people["rad3"]}
    summary = svc.create_list(people["coord"], name="Pilot A", cases=[studies[c] for c in pilot.CASES],
                              readers=list(readers.values()), model_id=MODEL, mode="ai_after_unaided",
                              randomise=True, seed=seed)
    table = svc.reference_table(people["coord"], summary.list_id)
    case_of = {pilot.CASES[i]: int(cid) for i, cid in enumerate(table.sort_values("position")["case_id"])}
    number_of = {v: k for k, v in case_of.items()}
    for c in pilot.CASES:
        svc.set_reference(people["coord"], study_id=studies[c], finding=pilot.REFERENCE[c],
                          source="pathology" if pilot.REFERENCE[c] == "malignant" else "follow-up")
    if before_cases is not None:
        before_cases(svc, case_of)
    for name, uid in readers.items():
        while (case := svc.next_case(uid, summary.list_id)) is not None:
            c = number_of[case.case_id]
            svc.open_case(uid, case.case_id)
            if on_step is not None:
                on_step(svc, name, uid, c, case.case_id, "unaided")
            finding, conf = pilot.READS[name]["unaided"][c]
            if name == "r1" and c == 5:  # a changed unaided read before the AI: superseded, not analysed
                svc.record_unaided(uid, case.case_id, finding="normal", confidence=2)
            clock.advance(pilot.unaided_seconds(name, c))
            svc.record_unaided(uid, case.case_id, finding=finding, confidence=conf)
            svc.show_ai(uid, case.case_id)
            if on_step is not None:
                on_step(svc, name, uid, c, case.case_id, "aided")
            clock.advance(pilot.aided_seconds(name, c))
            finding, conf = pilot.READS[name]["aided"][c]
            svc.record_aided(uid, case.case_id, finding=finding, confidence=conf)
            clock.advance(5)
    with factory.begin() as s:
        for name, answers in pilot.SUS_ANSWERS.items():
            for a in answers:
                repo.add_feedback(s, user=readers[name], answers=a, app_version="0.1.0")
        repo.add_feedback(s, user=people["lead"], answers=[1, 5] * 5, app_version="0.1.0")
    return svc, summary, case_of, readers, clock
