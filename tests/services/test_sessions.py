"""Tests of services.sessions: tokens, idle and absolute expiry, sign-out, admin end-sessions, privacy."""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from db import repository as repo
from db.repository.auth_sessions import _utc
from db.schema import AuditEvent, AuthSession, SessionEndReason
from services import sessions as auth

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
POLICY = auth.SessionPolicy(idle=timedelta(minutes=30), lifetime=timedelta(hours=12))


def start(factory, user_id: int, now: datetime = T0) -> auth.IssuedSession:
    return auth.start_session(factory, user_id, now=now, policy=POLICY)


def resume(factory, token: str, now: datetime) -> auth.SessionCheck:
    return auth.resume_session(factory, token, now=now, policy=POLICY)


class TestPolicy:
    def test_from_settings_reads_the_two_environment_variables(self, isolated_settings, monkeypatch):
        from core import settings as config

        monkeypatch.setenv("LUNGREVIEW_SESSION_IDLE_MIN", "5")
        monkeypatch.setenv("LUNGREVIEW_SESSION_MAX_HOURS", "2")
        config.get_settings.cache_clear()
        assert auth.SessionPolicy.from_settings() == auth.SessionPolicy(timedelta(minutes=5), timedelta(hours=2))

    def test_defaults_are_30_minutes_idle_and_12_hours_in_all(self, isolated_settings):
        assert auth.SessionPolicy.from_settings() == POLICY


class TestStartAndResume:
    def test_a_valid_token_gives_its_user(self, factory, people):
        issued = start(factory, people["rad1"])
        check = resume(factory, issued.token, T0 + timedelta(minutes=5))
        assert check.valid and check.user.id == people["rad1"] and check.user.username == "rad1"
        assert check.expires_at == T0 + timedelta(hours=12) == issued.expires_at

    def test_two_sign_ins_get_different_tokens_and_both_work(self, factory, people):
        a, b = start(factory, people["rad1"]), start(factory, people["rad1"])
        assert a.token != b.token and len(a.token) == 43
        assert resume(factory, a.token, T0).valid and resume(factory, b.token, T0).valid

    @pytest.mark.parametrize("token", ["", "x" * 200, None, 12, "never-issued-token"])
    def test_a_malformed_or_unknown_token_is_refused_without_an_error(self, factory, people, token):
        start(factory, people["rad1"])
        check = resume(factory, token, T0)
        assert not check.valid and check.ended is None

    def test_a_deactivated_account_cannot_start_a_session(self, factory, people):
        with factory.begin() as s:
            repo.set_user_active(s, people["admin"], people["rad2"], False)
        with pytest.raises(repo.PermissionDenied):
            start(factory, people["rad2"])

    def test_the_token_is_not_in_the_repr(self, factory, people):
        issued = start(factory, people["rad1"])
        assert issued.token not in repr(issued)


class TestExpiry:
    def test_use_within_the_idle_timeout_keeps_the_session_alive_past_it(self, factory, people):
        token = start(factory, people["rad1"]).token
        for minutes in (20, 40, 60, 80):  # every use within 30 min of the previous one
            assert resume(factory, token, T0 + timedelta(minutes=minutes)).valid

    def test_idle_longer_than_the_timeout_is_refused_and_stays_refused(self, factory, people):
        token = start(factory, people["rad1"]).token
        late = resume(factory, token, T0 + timedelta(minutes=31))
        assert not late.valid and late.ended is SessionEndReason.IDLE
        again = resume(factory, token, T0 + timedelta(minutes=32))
        assert not again.valid and again.ended is SessionEndReason.IDLE
        with factory.begin() as s:
            row = s.scalar(select(AuthSession))
            assert row.ended_reason == "idle" and row.revoked_at is not None

    def test_the_absolute_lifetime_ends_a_session_in_constant_use(self, factory, people):
        token = start(factory, people["rad1"]).token
        now = T0
        while now < T0 + timedelta(hours=12) - timedelta(minutes=10):
            now += timedelta(minutes=10)
            assert resume(factory, token, now).valid
        check = resume(factory, token, T0 + timedelta(hours=12))
        assert not check.valid and check.ended is SessionEndReason.EXPIRED

    def test_last_seen_is_written_at_most_once_a_minute(self, factory, people):
        token = start(factory, people["rad1"]).token
        resume(factory, token, T0 + timedelta(seconds=30))
        with factory.begin() as s:
            assert _utc(s.scalar(select(AuthSession.last_seen_at))) == T0
        resume(factory, token, T0 + timedelta(seconds=61))
        with factory.begin() as s:
            assert _utc(s.scalar(select(AuthSession.last_seen_at))) == T0 + timedelta(seconds=61)

    def test_a_user_deactivated_after_sign_in_is_refused(self, factory, people):
        token = start(factory, people["rad1"]).token
        with factory.begin() as s:
            repo.set_user_active(s, people["admin"], people["rad1"], False)
        check = resume(factory, token, T0 + timedelta(minutes=1))
        assert not check.valid and check.ended is SessionEndReason.USER_INACTIVE


class TestSignOut:
    def test_sign_out_revokes_the_token(self, factory, people):
        token = start(factory, people["rad1"]).token
        assert auth.end_session(factory, token, now=T0 + timedelta(minutes=1)) is True
        check = resume(factory, token, T0 + timedelta(minutes=2))
        assert not check.valid and check.ended is SessionEndReason.SIGN_OUT

    def test_sign_out_leaves_the_users_other_sessions_alone(self, factory, people):
        a, b = start(factory, people["rad1"]), start(factory, people["rad1"])
        auth.end_session(factory, a.token, now=T0)
        assert not resume(factory, a.token, T0).valid and resume(factory, b.token, T0).valid

    def test_signing_out_twice_or_with_an_unknown_token_is_not_an_error(self, factory, people):
        token = start(factory, people["rad1"]).token
        assert auth.end_session(factory, token, now=T0) is True
        assert auth.end_session(factory, token, now=T0) is False
        assert auth.end_session(factory, "no-such-token", now=T0) is False


class TestAdminEndsSessions:
    def test_admin_ends_every_session_of_a_user_and_no_one_elses(self, factory, people):
        tokens = [start(factory, people["rad1"]).token for _ in range(3)]
        other = start(factory, people["rad2"]).token
        assert auth.count_active_sessions(factory, people["rad1"], now=T0, policy=POLICY) == 3
        assert auth.end_user_sessions(factory, people["admin"], people["rad1"], now=T0) == 3
        for token in tokens:
            check = resume(factory, token, T0 + timedelta(minutes=1))
            assert not check.valid and check.ended is SessionEndReason.ENDED_BY_ADMIN
        assert resume(factory, other, T0 + timedelta(minutes=1)).valid
        assert auth.count_active_sessions(factory, people["rad1"], now=T0, policy=POLICY) == 0
        with factory.begin() as s:
            details = [e.detail for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "admin-change"))]
        assert "ended 3 session(s) of 'rad1'" in details

    @pytest.mark.parametrize("actor", ["rad2", "lead", "coord"])
    def test_only_an_admin_may_end_another_users_sessions(self, factory, people, actor):
        token = start(factory, people["rad1"]).token
        with pytest.raises(repo.PermissionDenied):
            auth.end_user_sessions(factory, people[actor], people["rad1"], now=T0)
        assert resume(factory, token, T0).valid

    def test_an_unknown_user_is_reported(self, factory, people):
        with pytest.raises(repo.NotFoundError):
            auth.end_user_sessions(factory, people["admin"], 9999, now=T0)


class TestNoUsableTokenInTheDatabase:
    def test_the_database_file_holds_only_the_sha256_of_each_token(self, engine, factory, people,
                                                                   isolated_settings):
        issued = [start(factory, people[name]) for name in ("rad1", "rad2", "admin")]
        auth.end_session(factory, issued[0].token, now=T0)
        engine.dispose()
        if engine.dialect.name != "sqlite":  # PostgreSQL: every stored row, as text
            from sqlalchemy import text

            with engine.connect() as conn:
                rows = " ".join(r[0] for r in conn.execute(text("SELECT t::text FROM auth_sessions t")))
                rows += " ".join(r[0] for r in conn.execute(text("SELECT t::text FROM audit_events t")))
            for i in issued:
                assert i.token not in rows
                assert auth.hash_token(i.token) in rows  # the digest is there, so the search is real
            return
        db_file = isolated_settings.var_dir / "test.db"
        with closing(sqlite3.connect(db_file)) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            hashes = {r[0] for r in conn.execute("SELECT token_hash FROM auth_sessions")}
        raw = b"".join(p.read_bytes() for p in db_file.parent.glob("test.db*"))
        assert hashes == {auth.hash_token(i.token) for i in issued}
        for i in issued:
            token_bytes = base64.urlsafe_b64decode(i.token + "=")
            for needle in (i.token.encode(), i.token.encode("utf-16-le"), token_bytes, token_bytes.hex().encode()):
                assert needle not in raw
            assert auth.hash_token(i.token).encode() in raw  # the digest is there, so the search is real


class TestReadFirst:
    """``resume_session(read_factory=...)``: the check is made without the write lock unless it must write."""

    @staticmethod
    def _rows(factory) -> dict[int, tuple]:
        with factory.begin() as s:
            return {r.id: (_utc(r.last_seen_at), r.revoked_at is not None, r.ended_reason)
                    for r in s.scalars(select(AuthSession))}

    def test_it_gives_the_outcomes_and_writes_of_the_write_path(self, engine, factory, people):
        from db.session import make_session_factory

        reader = make_session_factory(engine, read_only=True)
        plain = start(factory, people["rad1"]).token
        first = start(factory, people["rad2"]).token

        def both(now: datetime) -> tuple[auth.SessionCheck, auth.SessionCheck]:
            a = auth.resume_session(factory, plain, now=now, policy=POLICY)
            b = auth.resume_session(factory, first, now=now, policy=POLICY, read_factory=reader)
            return a, b

        for minutes in (0.5, 1.5, 20, 49, 80):  # no write, a touch, touches, then idle for 31 min
            a, b = both(T0 + timedelta(minutes=minutes))
            assert (a.valid, a.ended) == (b.valid, b.ended)
            rows = list(self._rows(factory).values())
            assert rows[0] == rows[1]
        assert (a.valid, a.ended) == (False, SessionEndReason.IDLE)  # so the idle end was compared too
        for token in ("never-issued", ""):
            assert not auth.resume_session(factory, token, now=T0, policy=POLICY, read_factory=reader).valid
        gone = start(factory, people["rad3"], now=T0 + timedelta(hours=2)).token
        with factory.begin() as s:
            repo.set_user_active(s, people["admin"], people["rad3"], False)
        check = auth.resume_session(factory, gone, now=T0 + timedelta(hours=2, seconds=10), policy=POLICY,
                                    read_factory=reader)
        assert not check.valid and check.ended is SessionEndReason.USER_INACTIVE
        assert self._rows(factory)[check.session_id][1:] == (True, SessionEndReason.USER_INACTIVE.value)

    def test_a_check_that_writes_nothing_does_not_wait_for_a_writer(self, engine, isolated_settings, people):
        if engine.dialect.name != "sqlite":
            pytest.skip("the write lock held here is SQLite's")
        from sqlalchemy.exc import OperationalError

        from db.session import make_engine, make_session_factory

        impatient = make_engine(isolated_settings.db_url, busy_timeout_s=0.2)
        try:
            writer, reader = make_session_factory(impatient), make_session_factory(impatient, read_only=True)
            token = start(writer, people["rad1"]).token
            with closing(sqlite3.connect(isolated_settings.var_dir / "test.db", isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")  # another writer (a save, an analysis) holds the lock
                soon = T0 + timedelta(seconds=30)
                check = auth.resume_session(writer, token, now=soon, policy=POLICY, read_factory=reader)
                assert check.valid and check.user.username == "rad1"
                with pytest.raises(OperationalError, match="locked"):  # the write path has to wait for it
                    auth.resume_session(writer, token, now=soon, policy=POLICY)
                other.execute("ROLLBACK")
        finally:
            impatient.dispose()
