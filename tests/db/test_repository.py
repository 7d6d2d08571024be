"""Tests of db.repository on a real, migrated SQLite file (one class per function)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from db import repository as repo
from db.schema import AuditEvent, Review, User
from tests.db.factories import new_inference, new_study, sha


def counts(factory) -> dict[str, int]:
    with factory() as s:
        return repo.count_rows(s)


class TestHasUsers:
    def test_false_on_a_fresh_database_true_after_first_user(self, factory):
        with factory.begin() as s:
            assert repo.has_users(s) is False
            repo.create_user(s, "first", "First Admin", "admin", "long-password")
            assert repo.has_users(s) is True


class TestCreateUser:
    def test_first_user_must_be_an_admin(self, factory):
        with factory() as s, pytest.raises(repo.ValidationError, match="first user must be an admin"):
            repo.create_user(s, "rad", "Dr Rad", "radiologist", "long-password")

    def test_stores_a_bcrypt_hash_not_the_password(self, factory, people):
        with factory() as s:
            user = s.get(User, people["rad1"])
            assert user.password_hash.startswith("$2b$")
            assert "rad1-pass-1" not in user.password_hash
            assert user.role == "radiologist" and user.active

    def test_after_the_first_user_only_an_admin_may_create(self, factory, people):
        before = counts(factory)
        with factory() as s:
            with pytest.raises(repo.PermissionDenied, match="admin"):
                repo.create_user(s, "x-user", "X", "radiologist", "long-password")
            with pytest.raises(repo.PermissionDenied, match="only admin"):
                repo.create_user(s, "x-user", "X", "radiologist", "long-password", actor=people["lead"])
            s.rollback()
        assert counts(factory) == before

    @pytest.mark.parametrize(
        "username, role, password, fragment",
        [
            ("ab", "radiologist", "long-password", "3-64 characters"),
            ("bad name", "radiologist", "long-password", "3-64 characters"),
            ("newuser", "surgeon", "long-password", "Unknown role 'surgeon'"),
            ("newuser", "radiologist", "short", "at least 8"),
            ("newuser", "radiologist", "é" * 40, "72 bytes"),
            ("RAD1", "radiologist", "long-password", "already taken"),
        ],
    )
    def test_refuses_bad_values(self, factory, people, username, role, password, fragment):
        before = counts(factory)
        with factory() as s, pytest.raises(repo.ValidationError, match=fragment):
            repo.create_user(s, username, "New User", role, password, actor=people["admin"])
        assert counts(factory) == before


class TestAuthenticate:
    def test_right_password_signs_in_and_is_audited(self, factory, people):
        with factory.begin() as s:
            user = repo.authenticate(s, "rad1", "rad1-pass-1")
            assert user is not None and user.id == people["rad1"]
        with factory() as s:
            last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
            assert (last.action, last.user_id) == ("sign-in", people["rad1"])

    def test_wrong_password_unknown_name_and_deactivated_user_are_refused(self, factory, people):
        with factory.begin() as s:
            assert repo.authenticate(s, "rad1", "wrong-password") is None
            assert repo.authenticate(s, "nobody", "rad1-pass-1") is None
            repo.set_user_active(s, people["admin"], people["rad2"], False)
            assert repo.authenticate(s, "rad2", "rad2-pass-1") is None
        with factory() as s:
            failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "sign-in-failed")).all()
            assert len(failed) == 3


class TestListUsers:
    def test_lists_all_users_by_name(self, factory, people):
        with factory() as s:
            names = [u.username for u in repo.list_users(s)]
        assert names == sorted(names) and set(names) == set(people)


class TestSetUserActive:
    def test_admin_deactivates_and_reactivates(self, factory, people):
        with factory.begin() as s:
            assert repo.set_user_active(s, people["admin"], people["rad1"], False).active is False
            assert repo.set_user_active(s, people["admin"], people["rad1"], True).active is True

    def test_non_admin_is_refused(self, factory, people):
        with factory() as s, pytest.raises(repo.PermissionDenied):
            repo.set_user_active(s, people["lead"], people["rad1"], False)

    def test_last_admin_cannot_be_deactivated(self, factory, people):
        with factory() as s, pytest.raises(repo.ValidationError, match="last active admin"):
            repo.set_user_active(s, people["admin"], people["admin"], False)

    def test_unknown_user_is_not_found(self, factory, people):
        with factory() as s, pytest.raises(repo.NotFoundError):
            repo.set_user_active(s, people["admin"], 9999, False)


class TestSetUserRole:
    def test_admin_changes_a_role(self, factory, people):
        with factory.begin() as s:
            assert repo.set_user_role(s, people["admin"], people["coord"], "lead").role == "lead"

    def test_refuses_unknown_role_and_last_admin_demotion(self, factory, people):
        with factory() as s:
            with pytest.raises(repo.ValidationError, match="Unknown role"):
                repo.set_user_role(s, people["admin"], people["rad1"], "boss")
            with pytest.raises(repo.ValidationError, match="last active admin"):
                repo.set_user_role(s, people["admin"], people["admin"], "lead")

    def test_radiologist_may_not_change_roles(self, factory, people):
        with factory() as s, pytest.raises(repo.PermissionDenied, match="only admin may change users"):
            repo.set_user_role(s, people["rad1"], people["rad1"], "admin")


class TestAddStudy:
    def test_stores_the_study_and_finds_it_by_hash(self, factory, people):
        with factory.begin() as s:
            study, _ = new_study(s, people["rad1"], "a")
        with factory() as s:
            found = repo.find_study_by_hash(s, sha("contenta"))
            assert found is not None and found.id == study.id and found.n_slices == 2

    def test_same_upload_twice_is_refused_with_the_existing_study(self, factory, people):
        with factory.begin() as s:
            study, _ = new_study(s, people["rad1"], "a")
        with factory() as s, pytest.raises(repo.ValidationError, match=f"study {study.id}"):
            repo.add_study(s, study_key=sha("other")[:32], modality="CT", n_series=1, n_slices=1,
                           source_kind="dicom", content_hash=sha("contenta"), uploaded_by=people["rad1"])

    @pytest.mark.parametrize(
        "change, fragment",
        [
            ({"study_key": "1.2.840.113619.2.55.3.604688119"}, "pseudonymous"),
            ({"source_kind": "bmp"}, "Unknown source kind"),
            ({"n_slices": 0}, "Number of slices"),
            ({"content_hash": "abc"}, "Content hash"),
            ({"uploaded_by": 12345}, "no user"),
        ],
    )
    def test_refuses_bad_values_and_writes_nothing(self, factory, people, change, fragment):
        before = counts(factory)
        kwargs = dict(study_key=sha("k")[:32], modality="CT", n_series=1, n_slices=3, source_kind="dicom",
                      content_hash=sha("c"), uploaded_by=people["rad1"])
        kwargs.update(change)
        with factory() as s, pytest.raises(repo.RepositoryError, match=fragment):
            repo.add_study(s, **kwargs)
        assert counts(factory) == before


class TestAddInference:
    def test_stores_probabilities_and_labels(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a", ai_label="benign")
        with factory() as s:
            got = repo.latest_inference(s, inf.series_id, "basic-cnn-v1")
            assert got.id == inf.id and got.ai_label == "benign" and got.ood is False
            assert np.allclose(got.slice_probabilities, [[0.1, 0.8, 0.1]] * 2)

    def test_numpy_inputs_are_accepted(self, factory, people):
        with factory.begin() as s:
            _, first = new_study(s, people["rad1"], "a")
            inf = repo.add_inference(
                s, series_id=first.series_id, model_id="m2", model_sha256=sha("m2"),
                slice_probabilities=np.full((2, 3), 1 / 3, dtype=np.float32), threshold=np.float32(0.3),
                ood=np.array([False, True]), latency_ms=np.float64(5.5),
                series_result={"series_label": "normal", "series_score": np.float32(0.4),
                               "probabilities": np.zeros((2, 3))})
            assert inf.ood is True and inf.series_result["probabilities"] == [[0.0] * 3] * 2

    @pytest.mark.parametrize(
        "change, error, fragment",
        [
            ({"series_id": 999}, repo.NotFoundError, "no series"),
            ({"slice_probabilities": [[0.5, 1.5]]}, repo.ValidationError, "from 0 to 1"),
            ({"slice_probabilities": [0.5, 0.5]}, repo.ValidationError, "shape"),
            ({"series_result": {"series_label": "cancer", "series_score": 0.5}}, repo.ValidationError,
             "Unknown series label"),
            ({"threshold": 1.5}, repo.ValidationError, "threshold"),
            ({"latency_ms": float("nan")}, repo.ValidationError, "finite"),
            ({"model_sha256": "xyz"}, repo.ValidationError, "sha256"),
        ],
    )
    def test_refuses_bad_values(self, factory, people, change, error, fragment):
        with factory.begin() as s:
            _, first = new_study(s, people["rad1"], "a")
        before = counts(factory)
        kwargs = dict(series_id=first.series_id, model_id="m", model_sha256=sha("m"), slice_probabilities=[[0.2, 0.8]],
                      series_result={"series_label": "benign", "series_score": 0.8}, threshold=0.5, ood=False,
                      latency_ms=1.0)
        kwargs.update(change)
        with factory() as s, pytest.raises(error, match=fragment):
            repo.add_inference(s, **kwargs)
        assert counts(factory) == before


class TestLatestInference:
    def test_returns_the_newest_of_the_model_or_none(self, factory, people):
        with factory.begin() as s:
            study, first = new_study(s, people["rad1"], "a")
            second = repo.add_inference(s, series_id=first.series_id, model_id="basic-cnn-v1", model_sha256=sha("x"),
                                        slice_probabilities=[[0.1, 0.9]], threshold=0.5, ood=False, latency_ms=1,
                                        series_result={"series_label": "benign", "series_score": 0.9})
        with factory() as s:
            assert repo.latest_inference(s, first.series_id, "basic-cnn-v1").id == second.id > first.id
            assert repo.latest_inference(s, first.series_id, "unknown-model") is None


def review_kwargs(study, inf, reader, **change):
    kwargs = dict(study_id=study.id, inference_id=inf.id, reader=reader, finding="malignant", agreement="agree",
                  confidence=4, heatmap_helpful=3, comment="spiculated nodule RUL", seconds_to_decision=42.0)
    kwargs.update(change)
    return kwargs


class TestAddReview:
    def test_stores_a_review(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            review = repo.add_review(s, **review_kwargs(study, inf, people["rad1"]))
        with factory() as s:
            got = s.get(Review, review.id)
            assert (got.finding, got.agreement, got.confidence, got.heatmap_helpful) == ("malignant", "agree", 4, 3)
            assert got.supersedes_id is None

    def test_a_change_of_mind_is_a_new_row_that_supersedes_the_old(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            first = repo.add_review(s, **review_kwargs(study, inf, people["rad1"], finding="benign",
                                                       agreement="disagree"))
            other = repo.add_review(s, **review_kwargs(study, inf, people["rad2"]))
        with factory.begin() as s:
            second = repo.add_review(s, **review_kwargs(study, inf, people["rad1"]))
        with factory() as s:
            history = repo.review_history(s, study.id, people["rad1"])
            assert [r.id for r in history] == [first.id, second.id]
            assert history[0].finding == "benign"  # the earlier row is unchanged
            assert history[1].supersedes_id == first.id
            current = repo.current_reviews(s, study_id=study.id)
            assert {r.id for r in current} == {second.id, other.id}
            assert repo.current_review(s, inf.id, people["rad1"]).id == second.id

    @pytest.mark.parametrize(
        "change, error, fragment",
        [
            ({"finding": "cancer"}, repo.ValidationError, "Unknown finding 'cancer'"),
            ({"agreement": "maybe"}, repo.ValidationError, "Unknown agreement"),
            ({"confidence": 0}, repo.ValidationError, "Confidence must be a whole number from 1 to 5"),
            ({"confidence": 6}, repo.ValidationError, "Confidence"),
            ({"confidence": 3.5}, repo.ValidationError, "Confidence"),
            ({"heatmap_helpful": 9}, repo.ValidationError, "Heatmap"),
            ({"seconds_to_decision": -1}, repo.ValidationError, "Seconds"),
            ({"study_id": 4242}, repo.NotFoundError, "no study with id 4242"),
            ({"inference_id": 4242}, repo.NotFoundError, "no inference"),
        ],
    )
    def test_bad_input_is_refused_and_nothing_changes(self, factory, people, change, error, fragment):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
        before = counts(factory)
        with factory.begin() as s, pytest.raises(error, match=fragment):
            repo.add_review(s, **review_kwargs(study, inf, people["rad1"], **change))
        assert counts(factory) == before

    def test_inference_of_another_study_is_refused(self, factory, people):
        with factory.begin() as s:
            study_a, _ = new_study(s, people["rad1"], "a")
            _, inf_b = new_study(s, people["rad1"], "b")
        with factory() as s, pytest.raises(repo.ValidationError, match="belongs to study"):
            repo.add_review(s, **review_kwargs(study_a, inf_b, people["rad1"]))

    @pytest.mark.parametrize("who", ["lead", "coord"])
    def test_only_radiologists_and_admins_review(self, factory, people, who):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            repo.add_review(s, **review_kwargs(study, inf, people["admin"]))
        before = counts(factory)
        with factory() as s, pytest.raises(repo.PermissionDenied, match="admin, radiologist may add reviews"):
            repo.add_review(s, **review_kwargs(study, inf, people[who]))
        assert counts(factory) == before

    def test_deactivated_radiologist_may_not_review(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            repo.set_user_active(s, people["admin"], people["rad2"], False)
        with factory() as s, pytest.raises(repo.PermissionDenied, match="deactivated"):
            repo.add_review(s, **review_kwargs(study, inf, people["rad2"]))


class TestCurrentReviews:
    def test_filters_by_reader_and_model(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            _, inf2 = new_study(s, people["rad1"], "b", model_id="resnet50-v1")
            repo.add_review(s, **review_kwargs(study, inf, people["rad1"]))
            repo.add_review(s, **review_kwargs(inf2.study, inf2, people["rad2"]))
        with factory() as s:
            assert len(repo.current_reviews(s)) == 2
            assert [r.reader_id for r in repo.current_reviews(s, reader_id=people["rad2"])] == [people["rad2"]]
            assert [r.inference_id for r in repo.current_reviews(s, model_id="resnet50-v1")] == [inf2.id]


class TestWorklist:
    def test_rows_columns_and_filters(self, factory, people):
        with factory.begin() as s:
            a, inf_a = new_study(s, people["rad1"], "a", ai_label="malignant")
            b, inf_b = new_study(s, people["rad1"], "b", ai_label="normal")
            new_study(s, people["rad1"], "c")
            repo.add_review(s, **review_kwargs(a, inf_a, people["rad1"], finding="benign", agreement="partly"))
            repo.add_review(s, **review_kwargs(a, inf_a, people["rad2"]))
            repo.add_review(s, **review_kwargs(b, inf_b, people["rad1"], finding="normal"))
        with factory() as s:
            full = repo.worklist(s)
            assert list(full.columns) == list(repo.WORKLIST_COLUMNS)
            assert len(full) == 4  # study a twice (two readers), b once, c unread once
            assert full["study_key"].str.len().max() == 12
            assert full.loc[full["study_id"] == b.id, "ai_label"].item() == "normal"
            mine = repo.worklist(s, reader_id=people["rad2"])
            assert len(mine) == 3 and mine["finding"].notna().sum() == 1
            benign = repo.worklist(s, finding="benign")
            assert benign["reader_id"].tolist() == [people["rad1"]] and benign["agreement"].item() == "partly"
            assert len(repo.worklist(s, agreement="agree")) == 2
            assert repo.worklist(s, model_id="no-such-model").empty
            with pytest.raises(repo.ValidationError, match="Unknown finding"):
                repo.worklist(s, finding="tumour")


class TestAddSeries:
    def test_series_of_a_study_are_stored_once_per_key(self, factory, people):
        with factory.begin() as s:
            study, inf = new_study(s, people["rad1"], "a")
            second = repo.add_series(s, study_id=study.id, series_key=sha("second")[:32], modality="ct",
                                     n_slices=3, spacing_mm=(None, 0.5, 0.5), description="  soft  ")
        with factory() as s:
            got = repo.get_series(s, second.id)
            assert (got.modality, got.n_slices, got.spacing_mm, got.description) == ("CT", 3, (None, 0.5, 0.5),
                                                                                     "soft")
            assert repo.find_series(s, study.id, sha("second")[:32]).id == second.id
            assert repo.find_series(s, study.id, sha("third")[:32]) is None
            assert inf.series_id != second.id

    @pytest.mark.parametrize(
        "change, error, fragment",
        [
            ({"series_key": "1.2.840.113619.2.55"}, repo.ValidationError, "pseudonymous"),
            ({"series_key": sha("seriesa")[:32]}, repo.ValidationError, "already has this series"),
            ({"n_slices": 0}, repo.ValidationError, "Number of slices"),
            ({"spacing_mm": (0.0, 1.0, 1.0)}, repo.ValidationError, "Spacing z must be a positive"),
            ({"spacing_mm": (1.0, 1.0)}, repo.ValidationError, "Spacing must be"),
            ({"description": "x" * 257}, repo.ValidationError, "too long"),
            ({"study_id": 999}, repo.NotFoundError, "no study"),
        ],
    )
    def test_refuses_bad_values_and_writes_nothing(self, factory, people, change, error, fragment):
        with factory.begin() as s:
            study, _ = new_study(s, people["rad1"], "a")
        before = counts(factory)
        kwargs = dict(study_id=study.id, series_key=sha("new")[:32], modality="CT", n_slices=2)
        kwargs.update(change)
        with factory() as s, pytest.raises(error, match=fragment):
            repo.add_series(s, **kwargs)
        assert counts(factory) == before


class TestSeriesReads:
    def test_a_read_of_another_series_does_not_supersede(self, factory, people):
        with factory.begin() as s:
            study, inf1 = new_study(s, people["rad1"], "a")
            other = repo.add_series(s, study_id=study.id, series_key=sha("b2")[:32], modality="CT", n_slices=2)
            inf2 = new_inference(s, other.id, ai_label="normal")
            r1 = repo.add_review(s, **review_kwargs(study, inf1, people["rad1"]))
            r2 = repo.add_review(s, **review_kwargs(study, inf2, people["rad1"], finding="normal"))
        with factory() as s:
            assert r2.supersedes_id is None
            assert [r.id for r in repo.current_reviews(s, study_id=study.id)] == [r1.id, r2.id]
            assert [r.id for r in repo.current_reviews(s, series_id=other.id)] == [r2.id]

    def test_worklist_has_one_row_per_series_read(self, factory, people):
        with factory.begin() as s:
            study, inf1 = new_study(s, people["rad1"], "a")
            other = repo.add_series(s, study_id=study.id, series_key=sha("b2")[:32], modality="CT", n_slices=2,
                                    description="CT soft")
            inf2 = new_inference(s, other.id, ai_label="normal")
            repo.add_review(s, **review_kwargs(study, inf1, people["rad1"]))
            repo.add_review(s, **review_kwargs(study, inf2, people["rad1"], finding="normal", agreement="agree"))
            repo.add_review(s, **review_kwargs(study, inf2, people["rad2"], finding="benign", agreement="disagree"))
        with factory() as s:
            wl = repo.worklist(s)
        assert len(wl) == 3
        by_series = wl.groupby("series_id")["review_id"].count().to_dict()
        assert by_series == {inf1.series_id: 1, other.id: 2}
        row1 = wl[wl["series_id"] == inf1.series_id].iloc[0]
        assert (row1["ai_label"], row1["finding"], row1["inference_id"]) == ("malignant", "malignant", inf1.id)
        assert set(wl.loc[wl["series_id"] == other.id, "finding"]) == {"normal", "benign"}
        assert set(wl.loc[wl["series_id"] == other.id, "series_description"]) == {"CT soft"}

    def test_find_inference_matches_bytes_series_and_model_file(self, factory, people):
        with factory.begin() as s:
            _, inf = new_study(s, people["rad1"], "a")
        same = dict(content_hash=sha("contenta"), series_key=sha("seriesa")[:32], model_id="basic-cnn-v1",
                    model_sha256=sha("basic-cnn-v1"))
        with factory() as s:
            assert repo.find_inference(s, **same).id == inf.id
            for change in ({"content_hash": sha("contentb")}, {"series_key": sha("seriesb")[:32]},
                           {"model_id": "other"}, {"model_sha256": sha("retrained")}):
                assert repo.find_inference(s, **{**same, **change}) is None


class TestAddFeedback:
    def test_stores_answers_score_and_role(self, factory, people):
        with factory.begin() as s:
            fb = repo.add_feedback(s, user=people["rad1"], answers=[5, 1] * 5, helped="heatmaps",
                                   hindered="slow upload", app_version="0.1.0")
        assert fb.sus_score == 100.0 and fb.role == "radiologist" and fb.answers == [5, 1] * 5

    @pytest.mark.parametrize("answers", [[3] * 9, [3] * 9 + [0], [3] * 9 + [None]])
    def test_missing_or_out_of_range_answers_are_refused(self, factory, people, answers):
        before = counts(factory)
        with factory() as s, pytest.raises(repo.ValidationError, match="SUS"):
            repo.add_feedback(s, user=people["rad1"], answers=answers, app_version="0.1.0")
        assert counts(factory) == before


class TestLogEvent:
    def test_appends_an_event_and_refuses_unknown_actions(self, factory, people):
        with factory.begin() as s:
            ev = repo.log_event(s, user_id=people["rad1"], action="sign-out", object_type="user",
                                object_id=people["rad1"])
            assert ev.id is not None and ev.at is not None
            with pytest.raises(repo.ValidationError, match="Unknown audit action"):
                repo.log_event(s, user_id=people["rad1"], action="delete-everything")
