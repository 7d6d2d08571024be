"""The "Your archive" section of dashboard/views/compare.py on a seeded archive run (no PACS, no Ray):
the comparison tables, and a link to Read a study only for a series the study store holds."""

from __future__ import annotations

from core.imaging import read_uploads
from db.repository import add_series, add_study
from db.repository import archive as archive_repo
from services.reading import keep_series
from tests.dashboard.conftest import make_app, open_page, texts
from tests.factories.dicom import make_dicom

SHA = "a" * 64
#: (series index, model, finding, score)
ROWS = [(0, "m1", "malignant", 0.9), (0, "m2", "normal", 0.1), (1, "m1", "benign", 0.4), (1, "m2", "benign", 0.35)]


def _seed(factory, users) -> tuple[int, str, str]:
    """A finished run of two models on two series; series 0 was also uploaded (its images in the study store)."""
    result = read_uploads([(f"{i}.dcm", make_dicom(instance_number=i + 1, position=(0.0, 0.0, float(i)),
                                                   study_uid="1.2.3.4", series_uid="1.2.3.4.5"))
                           for i in range(3)])
    study = result.studies[0]
    stored = study.series[0]
    keep_series(study, stored)
    other = "f" * 32
    with factory.begin() as s:
        row = add_study(s, study_key=study.study_key, modality="CT", n_series=1, n_slices=3, source_kind="dicom",
                        content_hash=study.content_hash, uploaded_by=users["radiologist"].id)
        series_id = add_series(s, study_id=row.id, series_key=stored.series_key, modality="CT", n_slices=3).id
        run = archive_repo.create_run(s, query={}, models=[{"id": "m1", "sha256": SHA}, {"id": "m2", "sha256": SHA}],
                                      max_attempts=3, created_by=users["lead"].id)
        for i, model, finding, score in ROWS:
            key = stored.series_key if i == 0 else other
            archive_repo.record_done(s, run_id=run.id, study_key=study.study_key if i == 0 else "e" * 32,
                                     series_key=key, model_id=model, model_sha256=SHA, finding=finding,
                                     series_score=score, result={"probabilities": [0.1, 0.1, 0.8],
                                                                 "class_names": ["normal", "benign", "malignant"],
                                                                 "thresholds": {"malignant": 0.5}})
        archive_repo.set_run_status(s, run.id, "finished", n_series=2)
    return series_id, stored.series_key, other


def test_lead_compares_the_models_of_a_run(registry_env, users, factory):
    series_id, stored_key, other = _seed(factory, users)
    at = open_page(make_app(users["lead"]), "compare.py")
    assert not at.exception
    page = texts(at)
    assert "Your archive" in page and "No PACS is configured" in page
    assert "finished, 2 series planned; scored per model: m1 2, m2 2" in page
    scores = next(d.value for d in at.dataframe if "n_flagged" in d.value.columns)
    assert list(scores["model_id"]) == ["m1", "m2"] and list(scores["n_flagged"]) == [1, 0]
    kappa = next(d.value for d in at.dataframe if "kappa" in d.value.columns)
    assert kappa.loc[0, "n_series"] == 2 and kappa.loc[0, "percent_agreement"] == 50.0
    worst = next(d.value for d in at.dataframe if "read a study" in d.value.columns)
    assert list(worst["series_key"]) == [stored_key, other]  # the one the models disagree on first
    assert list(worst["read a study"]) == [f"read?case={series_id}", "not in the study store: open it from the PACS"]


def test_no_run_yet(registry_env, users):
    at = open_page(make_app(users["admin"]), "compare.py")
    assert not at.exception and "No archive run yet." in texts(at)
