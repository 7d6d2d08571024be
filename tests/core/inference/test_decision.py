import numpy as np
import pytest

from core.domain import suspicious_class, suspicious_index
from core.inference.decision import decide

NAMES = ("normal", "benign", "malignant")


class TestDecide:
    def test_without_thresholds_is_argmax(self):
        p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
        assert decide(p, NAMES).tolist() == [0, 1, 2]

    def test_malignant_threshold_overrides_argmax(self):
        p = np.array([[0.6, 0.1, 0.3], [0.6, 0.2, 0.2]])
        assert decide(p, NAMES, {"malignant": 0.25}).tolist() == [2, 0]

    def test_high_threshold_can_demote_argmax_malignant_only_by_argmax(self):
        # A threshold only adds calls; below it the argmax still applies.
        p = np.array([[0.1, 0.1, 0.8]])
        assert decide(p, NAMES, {"malignant": 0.9}).tolist() == [2]

    def test_unknown_class_refused(self):
        with pytest.raises(ValueError, match="unknown class"):
            decide(np.ones((1, 3)) / 3, NAMES, {"cancer": 0.5})

    def test_shape_mismatch_refused(self):
        with pytest.raises(ValueError, match="expected probabilities"):
            decide(np.ones((2, 2)) / 2, NAMES)

    def test_out_of_range_threshold_refused(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            decide(np.ones((1, 3)) / 3, NAMES, {"malignant": 1.5})


class TestSuspiciousClass:
    def test_malignant_first_then_cancer_then_the_last_class(self):
        assert suspicious_index(NAMES) == 2 and suspicious_class(NAMES) == "malignant"
        assert suspicious_index(("malignant", "normal")) == 0
        assert suspicious_index(("cancer", "no_cancer")) == 0
        assert suspicious_class(("cancer", "malignant", "x")) == "malignant"
        assert suspicious_index(("no_cancer", "positive")) == 1

    def test_no_classes_refused(self):
        with pytest.raises(ValueError, match="empty"):
            suspicious_index(())
