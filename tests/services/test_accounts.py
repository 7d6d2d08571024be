"""Tests of services.accounts, the one-transaction services of the pages other than reading."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db import repository as repo
from db.schema import AuditEvent
from services import accounts as services
from tests.db.factories import new_inference, new_study, sha


def counts(factory) -> dict[str, int]:
    with factory() as s:
        return repo.count_rows(s)


class TestAccounts:
    def test_first_admin_then_sign_in_and_out(self, factory):
        assert services.first_run(factory)
        admin = services.create_first_admin(factory, "boss", "The Boss", "boss-pass-1")
        assert (admin.role, admin.active) == ("admin", True) and not services.first_run(factory)
        assert services.authenticate(factory, "boss", "wrong-pass") is None
        assert services.authenticate(factory, "BOSS", "boss-pass-1") == admin
        services.record_sign_out(factory, admin.id)
        with factory() as s:
            actions = list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
        assert actions[-3:] == ["sign-in-failed", "sign-in", "sign-out"]

    def test_second_first_admin_is_refused(self, factory, people):
        with pytest.raises(repo.PermissionDenied, match="Only an admin may create users"):
            services.create_first_admin(factory, "other", "Other", "other-pass-1")

    def test_admin_creates_and_changes_an_account(self, factory, people):
        made = services.create_account(factory, people["admin"], "newbie", "New Reader", "radiologist", "pw-12345678")
        assert made.username == "newbie" and made in services.list_accounts(factory)
        changed = services.change_account(factory, people["admin"], made.id, role="lead", active=False)
        assert (changed.role, changed.active) == ("lead", False)

    def test_a_refused_change_changes_nothing(self, factory, people):
        with pytest.raises(repo.ValidationError, match="last active admin"):
            services.change_account(factory, people["admin"], people["admin"], role="admin", active=False)
        with pytest.raises(repo.ValidationError, match="Unknown role"):  # role refused: active stays as it was
            services.change_account(factory, people["admin"], people["rad1"], role="boss", active=False)
        rad1 = next(a for a in services.list_accounts(factory) if a.id == people["rad1"])
        assert (rad1.role, rad1.active) == ("radiologist", True)

    def test_only_admins_create_accounts(self, factory, people):
        with pytest.raises(repo.PermissionDenied, match="create users"):
            services.create_account(factory, people["lead"], "x-user", "X", "lead", "pw-12345678")


class TestFeedback:
    def test_submit_returns_the_sus_score_and_results_show_it(self, factory, people):
        score = services.submit_feedback(factory, people["rad1"], [4, 2, 4, 2, 5, 1, 4, 2, 4, 2], helped="heatmap")
        assert score == 80.0  # Brooke 1996: (16 + 16) x 2.5
        results = services.feedback_results(factory, people["coord"])
        assert results.scores.to_dict("records") == [{"role": "radiologist", "sus_score": 80.0}]
        assert "heatmap" in set(results.texts["helped"])
        assert "review_id" in services.export_csv(factory, "reviews", people["lead"]).splitlines()[0]

    def test_incomplete_answers_are_refused_and_nothing_stored(self, factory, people):
        before = counts(factory)
        with pytest.raises(repo.ValidationError):
            services.submit_feedback(factory, people["rad1"], [4, 2, 4])
        assert counts(factory) == before

    def test_a_radiologist_may_not_read_results(self, factory, people):
        with pytest.raises(repo.PermissionDenied):
            services.feedback_results(factory, people["rad1"])


class TestWorklist:
    def test_choices_rows_and_one_study_s_results_per_series(self, factory, people):
        with factory.begin() as s:
            study, inf1 = new_study(s, people["rad1"], "a")
            other = repo.add_series(s, study_id=study.id, series_key=sha("two")[:32], modality="CT", n_slices=2,
                                    description="CT soft")
            inf2 = new_inference(s, other.id, ai_label="normal", model_id="resnet")
            repo.add_review(s, inference_id=inf1.id, reader=people["rad1"], finding="benign", agreement="partly",
                            confidence=3, seconds_to_decision=5.0)
        choices = services.worklist_choices(factory)
        assert choices.models == ["basic-cnn-v1", "resnet"] and choices.readers[people["rad1"]] == "Dr rad1"
        assert len(services.worklist(factory)) == 2
        assert services.worklist(factory, finding="benign")["series_id"].tolist() == [inf1.series_id]
        got = services.study_results(factory, study.id)
        assert [(r.series_id, r.model_id, r.ai_label) for r in got.results] == [
            (inf1.series_id, "basic-cnn-v1", "malignant"), (other.id, "resnet", "normal")]
        assert got.results[0].suspicious_index == 2 and got.results[1].series_description == "CT soft"
        assert got.reads["finding"].tolist() == ["benign"] and inf2.series_id == other.id

    def test_reader_agreement_has_a_confusion_table_per_model(self, factory, people):
        with factory.begin() as s:
            _, inf = new_study(s, people["rad1"], "a")
            repo.add_review(s, inference_id=inf.id, reader=people["rad1"], finding="malignant", agreement="agree",
                            confidence=4, seconds_to_decision=5.0)
        agreement = services.reader_agreement(factory, ["basic-cnn-v1", "unused"])
        assert agreement.per_model["model_id"].tolist() == ["basic-cnn-v1"]
        assert int(agreement.confusions["basic-cnn-v1"].to_numpy().sum()) == 1
        assert int(agreement.confusions["unused"].to_numpy().sum()) == 0
