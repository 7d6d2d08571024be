"""Fixtures for the dashboard page tests: a temporary database and an empty registry per test,
fresh Streamlit resource caches, users of every role, and an AppTest factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PASSWORD = "correct-horse-9"


@pytest.fixture()
def app_env(isolated_settings, tmp_path, monkeypatch):
    """Isolated settings with an empty model registry in tmp_path; Streamlit caches cleared."""
    from core import settings as config

    registry = tmp_path / "registry"
    registry.mkdir()
    monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(registry))
    monkeypatch.setenv("LUNGREVIEW_WARM_MODEL", "0")  # no background model load in page tests
    config.get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    yield config.get_settings()
    st.cache_resource.clear()
    config.get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fast_bcrypt(monkeypatch):
    """bcrypt cost 4 instead of 12 in page tests (hashing is tested in tests/db); saves ~1 s a test."""
    import db.repository

    monkeypatch.setattr(db.repository, "_BCRYPT_ROUNDS", 4)


@pytest.fixture()
def factory(app_env):
    """A session factory on the test database (the same database the app opens)."""
    from db.session import make_engine, make_session_factory

    engine = make_engine(app_env.db_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture()
def users(factory):
    """One active user per role; returns {role value: SessionUser}."""
    from dashboard.components import SessionUser
    from tests.factories.users import create_one_per_role

    return {role: SessionUser.from_row(row) for role, row in create_one_per_role(factory, PASSWORD).items()}


def make_app(user=None, timeout: float = 30) -> AppTest:
    """AppTest of dashboard/app.py, optionally signed in as ``user`` (a SessionUser)."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    if user is not None:
        at.session_state["user"] = user
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    """Run the app once, switch to ``dashboard/views/<page>`` and run it."""
    at.run()
    at.switch_page(f"views/{page}")
    return at.run()


def texts(at: AppTest) -> str:
    """All markdown, caption, title, header, info, warning, error and success text of a run, joined."""
    parts = []
    for coll in (at.title, at.header, at.subheader, at.markdown, at.caption, at.info, at.warning, at.error,
                 at.success):
        parts.extend(str(e.value) for e in coll)
    return "\n".join(parts)


def _iq_slices(iq_dir: Path, per_class: int = 2) -> list[tuple[Path, str]]:
    """``per_class`` real IQ-OTH/NCCD JPGs per class (first files in natural order) with labels."""
    out = []
    for folder, label in (("Normal cases", "normal"), ("Bengin cases", "benign"), ("Malignant cases", "malignant")):
        files = sorted((iq_dir / folder).glob("*.jpg"))[:per_class]
        out.extend((f, label) for f in files)
    return out


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory, iq_dir) -> Path:
    """A registry with two tiny untrained 32-px models: ``tiny_a`` (default, with an evaluation.json
    computed on 6 real IQ-OTH/NCCD slices) and ``tiny_b`` (not evaluated)."""
    import json

    import numpy as np

    from core.domain import CLASS_NAMES
    from core.inference import Predictor
    from core.preprocessing import PreprocessSpec
    from core.registry import load_model
    from core.stats.metrics import evaluate_predictions
    from tests.factories.registry import TinyModel, make_registry

    reg = make_registry(
        tmp_path_factory.mktemp("dash_registry"),
        spec=PreprocessSpec(size=32),
        models=(
            TinyModel("tiny_a", "advanced_cnn", {"filters": 4, "n_conv": 2}),
            TinyModel("tiny_b", "basic_cnn", {"filters": 4, "n_conv": 2, "dense_units": 8}),
        ),
        intended_use="dashboard tests only",
        limitations=["untrained: outputs are meaningless"],
        training={"dataset": "none (untrained test model)", "starting_weights": "random"},
    )

    from core.imaging import read_picture

    pairs = _iq_slices(iq_dir)
    predictor = Predictor(load_model("tiny_a", reg))
    x = predictor.preprocess([read_picture(p).hu for p, _ in pairs])[0]
    proba = predictor.predict(x)
    y = np.array([CLASS_NAMES.index(lbl) for _, lbl in pairs])
    report = evaluate_predictions(y, proba, CLASS_NAMES, groups=[p.name for p, _ in pairs], n_boot=20, seed=0)
    report.update({"model_id": "tiny_a", "latency_ms_per_slice": 1.5, "model_size_bytes": 12345})
    (reg / "tiny_a" / "evaluation.json").write_text(json.dumps(report), encoding="utf-8")
    return reg


@pytest.fixture()
def registry_env(app_env, tiny_registry, monkeypatch):
    """``app_env`` with the tiny registry instead of the empty one."""
    from core import settings as config

    monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(tiny_registry))
    config.get_settings.cache_clear()
    yield config.get_settings()
    config.get_settings.cache_clear()


def seed_read(factory, users, *, model_id: str = "tiny_a", finding: str = "malignant", agreement: str = "agree",
              ai_label: str = "malignant", content: bytes = b"study-1", series: str = "series-1",
              description: str = "CT chest") -> int:
    """Store one study (found again by ``content``), its series ``series`` (added when new), one
    inference of ``model_id`` on it (2 slices) and the radiologist's read; returns the study id."""
    import hashlib

    from core.imaging import study_key_for
    from db.repository import (
        add_inference,
        add_review,
        add_series,
        add_study,
        find_series,
        find_study_by_hash,
    )

    probs = [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]] if ai_label == "malignant" else [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]
    content_hash = hashlib.sha256(content).hexdigest()
    with factory.begin() as s:
        study = find_study_by_hash(s, content_hash) or add_study(
            s, study_key=study_key_for(content.decode()), modality="CT", n_series=1, n_slices=2,
            source_kind="dicom", content_hash=content_hash, uploaded_by=users["radiologist"].id)
        key = study_key_for(f"{content.decode()}:{series}")
        row = find_series(s, study.id, key) or add_series(s, study_id=study.id, series_key=key, modality="CT",
                                                          n_slices=2, description=description)
        inf = add_inference(s, series_id=row.id, model_id=model_id, model_sha256="a" * 64, slice_probabilities=probs,
                            series_result={"finding": ai_label, "is_ood": False, "series_score": 0.7,
                                           "class_names": ["normal", "benign", "malignant"]},
                            threshold=0.5, ood=False, latency_ms=12.0)
        add_review(s, inference_id=inf.id, reader=users["radiologist"].id, finding=finding,
                   agreement=agreement, confidence=4, heatmap_helpful=3, comment="", seconds_to_decision=30.0)
        return study.id


def seed_nodule_read(factory, users) -> None:
    """The phantom series (tests/factories/ct.py) analysed and scanned by the fake detector; the
    radiologist accepts finding 1, rejects finding 2, adds a nodule, says Lung-RADS 4A and saves a read."""
    from services.reading import ReadingService, read_upload
    from tests.factories.ct import FakeDetector, phantom_files
    from tests.services.test_reading import CARD, CountingPredictor

    study = read_upload(phantom_files(), limit_mb=50).studies[0]
    series = study.series[0]
    svc = ReadingService(factory, CountingPredictor(), nodule_detector=FakeDetector().as_detector())
    rad = users["radiologist"].id
    analysis = svc.analyse(study, series, CARD, user_id=rad)
    found = svc.find_nodules(analysis, series, user_id=rad)
    n1, n2 = (f.nodule_id for f in found.findings)
    svc.decide_nodule(found, n1, reader_id=rad, decision="accept", opened_at=0.0)
    svc.decide_nodule(found, n2, reader_id=rad, decision="reject", opened_at=0.0)
    svc.add_nodule(found, series, reader_id=rad, slice_index=16, row=70, col=85, diameter_mm=7.0, opened_at=0.0)
    svc.save_lungrads(found, reader_id=rad, category="4A", suggested="4A", opened_at=0.0)
    svc.save_read(analysis.inference_id, reader_id=rad, finding="malignant", agreement="agree", confidence=4,
                  heatmap_helpful=None, comment="", opened_at=0.0)
