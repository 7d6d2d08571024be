"""Tests for dashboard/views/sign_in.py and the router in dashboard/app.py."""

from __future__ import annotations

from db.repository import count_rows, list_users
from tests.dashboard.conftest import PASSWORD, make_app, texts


class TestFirstRun:
    def test_empty_database_offers_first_admin_form(self, app_env):
        at = make_app().run()
        assert not at.exception
        assert "Create the first admin" in texts(at)
        assert at.text_input(key="first_username") is not None

    def test_first_run_creates_admin_and_signs_in(self, app_env, factory):
        at = make_app().run()
        at.text_input(key="first_username").input("chief")
        at.text_input(key="first_display_name").input("Chief Admin")
        at.text_input(key="first_password").input(PASSWORD)
        at.text_input(key="first_password2").input(PASSWORD)
        at.button(key="first_submit").click().run()
        assert not at.exception
        with factory.begin() as s:
            users = list_users(s)
        assert [(u.username, u.role) for u in users] == [("chief", "admin")]
        assert at.session_state["user"].username == "chief"
        assert "Signed in as **Chief Admin** (Admin)" in texts(at)

    def test_mismatched_passwords_create_nobody(self, app_env, factory):
        at = make_app().run()
        at.text_input(key="first_username").input("chief")
        at.text_input(key="first_display_name").input("Chief Admin")
        at.text_input(key="first_password").input(PASSWORD)
        at.text_input(key="first_password2").input(PASSWORD + "x")
        at.button(key="first_submit").click().run()
        assert "passwords differ" in texts(at)
        with factory.begin() as s:
            assert count_rows(s)["users"] == 0


class TestSignIn:
    def test_right_password_signs_in(self, users):
        at = make_app().run()
        at.text_input(key="signin_username").input("radiologist")
        at.text_input(key="signin_password").input(PASSWORD)
        at.button(key="signin_submit").click().run()
        assert not at.exception
        assert at.session_state["user"].role == "radiologist"

    def test_wrong_password_is_refused(self, users):
        at = make_app().run()
        at.text_input(key="signin_username").input("radiologist")
        at.text_input(key="signin_password").input("wrong-password")
        at.button(key="signin_submit").click().run()
        assert "user" not in at.session_state
        assert "Wrong username or password" in texts(at)

    def test_disclaimer_is_in_the_sidebar_before_sign_in(self, users):
        at = make_app().run()
        assert any("not a medical device" in w.value for w in at.sidebar.warning)
