"""Tests for dashboard/auth.py in AppTest: a sign-in gets a server-side session and a cookie write;
an ended session signs the user out at the next run with the reason; the admin ends sign-ins.

The browser side (the cookie really set, reload, new tab) is tested in tests/e2e/test_sessions.py.
"""

from __future__ import annotations

from sqlalchemy import select

from dashboard.auth import COOKIE_NAME
from db.schema import AuthSession
from services import sessions as auth_sessions
from tests.dashboard.conftest import PASSWORD, make_app, open_page, texts


def sign_in(at, username: str):
    at.run()
    at.text_input(key="signin_username").input(username)
    at.text_input(key="signin_password").input(PASSWORD)
    at.button(key="signin_submit").click().run()
    assert not at.exception
    return at


class TestSignInStartsASession:
    def test_password_sign_in_stores_only_the_hash_and_schedules_the_cookie(self, app_env, users, factory):
        at = sign_in(make_app(), "radiologist")
        token = at.session_state["_auth_token"]
        write = at.session_state["auth_cookie_write"]
        assert write["value"] == token and COOKIE_NAME == "lungreview_session"
        with factory.begin() as s:
            rows = list(s.scalars(select(AuthSession)))
        assert [(r.user_id, r.token_hash) for r in rows] == [(users["radiologist"].id, auth_sessions.hash_token(token))]

    def test_sign_out_ends_the_session_and_schedules_an_empty_expired_cookie(self, app_env, users, factory):
        at = sign_in(make_app(), "radiologist")
        token = at.session_state["_auth_token"]
        at.sidebar.button(key="sign_out").click().run()
        assert "user" not in at.session_state and "_auth_token" not in at.session_state
        write = at.session_state["auth_cookie_write"]
        assert write["value"] == "" and write["expires"].startswith("1970-01-01")
        check = auth_sessions.resume_session(factory, token)
        assert not check.valid and check.ended == "sign-out"


class TestEndedSessions:
    def test_an_admin_ending_the_session_signs_the_user_out_at_the_next_run(self, app_env, users, factory):
        at = sign_in(make_app(), "radiologist")
        assert auth_sessions.end_user_sessions(factory, users["admin"].id, users["radiologist"].id) == 1
        at.run()
        assert "user" not in at.session_state
        assert "An admin ended your sign-in" in texts(at)

    def test_idle_timeout_signs_the_user_out_with_the_reason(self, app_env, users, factory):
        at = sign_in(make_app(), "radiologist")
        token = auth_sessions.hash_token(at.session_state["_auth_token"])
        with factory.begin() as s:
            row = s.scalar(select(AuthSession).where(AuthSession.token_hash == token))
            row.last_seen_at = row.last_seen_at.replace(year=row.last_seen_at.year - 1)
        at.run()
        assert "user" not in at.session_state
        assert "30 minutes without activity" in texts(at)


class TestAdminEndsSignIns:
    def test_admin_ends_all_sign_ins_of_a_user(self, app_env, users, factory):
        for _ in range(2):
            auth_sessions.start_session(factory, users["lead"].id)
        at = open_page(make_app(users["admin"]), "admin.py")
        at.selectbox(key="change_user_id").set_value(users["lead"].id).run()
        assert "signed in in 2 browser session(s)" in texts(at)
        at.button(key=f"end_sessions_{users['lead'].id}").click().run()
        assert not at.exception
        assert "Ended 2 sign-in(s) of lead" in texts(at)
        assert auth_sessions.count_active_sessions(factory, users["lead"].id) == 0

    def test_the_button_is_disabled_without_sign_ins(self, app_env, users):
        at = open_page(make_app(users["admin"]), "admin.py")
        at.selectbox(key="change_user_id").set_value(users["coordinator"].id).run()
        assert at.button(key=f"end_sessions_{users['coordinator'].id}").disabled
