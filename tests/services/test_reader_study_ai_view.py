"""Tests of ``ReaderStudyService.ai_view``: what the shared viewer shows of a case's AI result, only once
the AI was shown to that reader (the blinding), and ``services.reading.analysis_of_inference``."""

from __future__ import annotations

import numpy as np
import pytest

from db.repository import PermissionDenied
from db.schema import Inference, ReadingListCase
from services import reader_study as rs
from tests.services.test_reader_study_marks import make_list, record_detection


@pytest.fixture()
def svc(factory):
    return rs.ReaderStudyService(factory)


def stored_probabilities(factory, case_id: int) -> tuple[np.ndarray, str, str, str]:
    with factory.begin() as s:
        case = s.get(ReadingListCase, case_id)
        inf = s.get(Inference, case.inference_id)
        return (np.asarray(inf.slice_probabilities, dtype=np.float32), case.study.content_hash, case.series_key,
                f"{inf.model_id}:{inf.model_sha256}")


class TestAiView:
    def test_refused_before_the_reveal_then_the_stored_analysis_and_findings(self, svc, factory, people):
        _, cases = make_list(svc, factory, people)
        rad, c = people["rad1"], cases[0]
        record_detection(factory, c)
        svc.open_case(rad, c)
        with pytest.raises(rs.AiNotShownError, match="not been shown to you"):
            svc.ai_view(rad, c)
        svc.record_unaided(rad, c, finding="malignant", confidence=4)
        with pytest.raises(rs.AiNotShownError):  # the unaided read alone does not reveal it
            svc.ai_view(rad, c)
        svc.show_ai(rad, c)
        view = svc.ai_view(rad, c)
        probs, content_hash, series_key, model = stored_probabilities(factory, c)
        np.testing.assert_array_equal(view.analysis.probabilities, probs)
        assert view.analysis.key == f"{content_hash}:{series_key}:{model}"  # the read page's key
        assert view.analysis.most_suspicious_index == int(np.argmax(probs[:, view.analysis.suspicious_index]))
        assert len(view.analysis.labels) == len(probs) and view.analysis.reused
        assert (view.series_key, view.study_id) == (series_key, svc.reader_case(rad, c).study_id)
        assert [(f.rank, f.slice_index, f.x, f.y) for f in view.findings] == [(1, 1, 30, 40), (2, 0, 100, 120)]
        # the other reader of the same case has not seen it: still blinded
        svc.open_case(people["rad2"], c)
        with pytest.raises(rs.AiNotShownError):
            svc.ai_view(people["rad2"], c)

    def test_ai_at_once_shows_it_from_the_opening_and_no_ai_never(self, svc, factory, people):
        _, at_once = make_list(svc, factory, people, mode="ai_at_once", name="At once")
        rad = people["rad1"]
        with pytest.raises(rs.AiNotShownError):  # not opened yet
            svc.ai_view(rad, at_once[0])
        svc.open_case(rad, at_once[0])
        assert svc.ai_view(rad, at_once[0]).findings == ()
        _, no_ai = make_list(svc, factory, people, mode="no_ai", name="No AI")
        svc.open_case(rad, no_ai[0])
        with pytest.raises(rs.NoAiModeError, match="read without AI"):
            svc.ai_view(rad, no_ai[0])

    def test_blinding_errors_are_permission_errors_and_strangers_are_refused(self, svc, factory, people):
        assert issubclass(rs.AiNotShownError, rs.BlindingError) and issubclass(rs.BlindingError, PermissionDenied)
        _, cases = make_list(svc, factory, people)
        with pytest.raises(PermissionDenied):
            svc.ai_view(people["coord"], cases[0])
