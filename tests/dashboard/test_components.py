"""Tests for dashboard/components.py: error messages, the error boundary, roles, the slice chart."""

from __future__ import annotations

import shutil

import numpy as np
from streamlit.testing.v1 import AppTest

from core.domain import Role
from core.imaging import NotAnImageError, UnsupportedTransferSyntaxError
from core.registry import ModelIntegrityError, ModelNotFoundError
from dashboard.components import SessionUser, allowed, message_for, slice_score_figure
from db.repository import PermissionDenied, ValidationError
from tests.dashboard.conftest import make_app, open_page, texts


class TestMessageFor:
    def test_integrity_failure_tells_to_ask_an_admin(self):
        text = message_for(ModelIntegrityError("sha256 differs"))
        assert "fails its integrity check" in text and "Ask an admin" in text

    def test_imaging_errors_keep_their_own_message(self):
        assert message_for(NotAnImageError("x.txt is not DICOM")).endswith("x.txt is not DICOM")
        assert "cannot decode" in message_for(UnsupportedTransferSyntaxError("JPEG 2000", "JPEG 2000", "none"))

    def test_repository_and_registry_errors_are_specific(self):
        assert message_for(PermissionDenied("only admins")).startswith("Not allowed")
        assert message_for(ValidationError("bad")).startswith("Please check your input")
        assert "not available" in message_for(ModelNotFoundError("no model x"))

    def test_unknown_errors_have_no_canned_message(self):
        assert message_for(ZeroDivisionError("boom")) == ""


def _boundary_app():
    import streamlit as st

    from dashboard.components import error_boundary

    st.write("before")
    with error_boundary("test page"):
        raise ZeroDivisionError("secret internals")
    st.write("after")


class TestErrorBoundary:
    def test_unexpected_error_shows_reference_not_traceback(self):
        at = AppTest.from_function(_boundary_app).run()
        assert not at.exception
        assert len(at.error) == 1
        msg = at.error[0].value
        assert "Something went wrong on test page (reference" in msg and "secret internals" not in msg
        assert [m.value for m in at.markdown] == ["before", "after"]


class TestAllowed:
    def test_role_membership(self):
        lead = SessionUser(1, "lee", "Lee", "lead")
        assert allowed(lead, {Role.LEAD, Role.ADMIN}) and not allowed(lead, {Role.RADIOLOGIST})
        assert not allowed(None, set(Role))


class TestSliceScoreFigure:
    def test_marks_suspicious_slice_and_ood_points(self):
        fig = slice_score_figure(np.array([0.1, 0.9, 0.2]), current=0, suspicious=1, threshold=0.5,
                                 ood=np.array([False, False, True]))
        names = [t.name for t in fig.data]
        assert names == ["P(malignant)", "out of distribution", "most suspicious"]
        assert list(fig.data[0].x) == [1, 2, 3]
        assert list(fig.data[2].x) == [2] and list(fig.data[1].x) == [3]


class TestTamperedModel:
    def test_analysis_refuses_a_model_that_fails_its_sha256(self, registry_env, users, tiny_registry, tmp_path,
                                                            monkeypatch, iq_dir):
        from core import settings as config

        reg = tmp_path / "tampered"
        shutil.copytree(tiny_registry, reg)
        model = reg / "tiny_a" / "model.keras"
        model.write_bytes(model.read_bytes() + b"tampered")
        monkeypatch.setenv("LUNGREVIEW_REGISTRY_DIR", str(reg))
        config.get_settings.cache_clear()
        jpg = sorted((iq_dir / "Normal cases").glob("*.jpg"))[0]
        at = open_page(make_app(users["radiologist"]), "read_study.py")
        at.file_uploader(key="upload").set_value([(jpg.name, jpg.read_bytes(), "image/jpeg")])
        at.run()
        at.button(key="analyse").click().run()
        assert not at.exception
        assert "fails its integrity check" in texts(at)
        assert not any(m.label == "AI result" for m in at.metric)
