"""Tests for dashboard/views/admin.py, the about page and the router's role handling."""

from __future__ import annotations

from db.repository import list_users
from tests.dashboard.conftest import PASSWORD, make_app, open_page, texts


class TestUsersPage:
    def test_admin_creates_a_radiologist(self, app_env, users, factory):
        at = open_page(make_app(users["admin"]), "admin.py")
        at.text_input(key="new_username").input("rad2")
        at.text_input(key="new_display_name").input("Second Radiologist")
        at.selectbox(key="new_role").set_value("radiologist")
        at.text_input(key="new_password").input(PASSWORD)
        at.button(key="create_user_submit").click().run()
        assert not at.exception
        assert "Created user 'rad2'" in texts(at)
        with factory.begin() as s:
            created = [u for u in list_users(s) if u.username == "rad2"]
        assert created and created[0].role == "radiologist" and created[0].active

    def test_short_password_is_refused_with_a_message(self, app_env, users, factory):
        at = open_page(make_app(users["admin"]), "admin.py")
        at.text_input(key="new_username").input("rad3")
        at.text_input(key="new_display_name").input("Third")
        at.text_input(key="new_password").input("short")
        at.button(key="create_user_submit").click().run()
        assert any("at least 8 characters" in e.value for e in at.error)
        with factory.begin() as s:
            assert "rad3" not in [u.username for u in list_users(s)]

    def test_deactivated_user_is_signed_out_on_next_run(self, app_env, users, factory):
        at = open_page(make_app(users["admin"]), "admin.py")
        at.selectbox(key="change_user_id").set_value(users["lead"].id).run()
        at.checkbox(key=f"change_active_{users['lead'].id}").uncheck()
        at.button(key="change_user_submit").click().run()
        with factory.begin() as s:
            lead = next(u for u in list_users(s) if u.id == users["lead"].id)
        assert not lead.active
        lead_app = make_app(users["lead"]).run()
        assert "user" not in lead_app.session_state
        assert "deactivated" in texts(lead_app)

    def test_lead_is_refused(self, app_env, users):
        at = open_page(make_app(users["lead"]), "admin.py")
        assert "may not manage users" in texts(at)
        assert len(at.text_input) == 0


class TestRouter:
    def test_sign_out_forgets_the_user_and_is_audited(self, app_env, users, factory):
        from services.analytics import export_frame

        at = make_app(users["coordinator"]).run()
        at.sidebar.button(key="sign_out").click().run()
        assert "user" not in at.session_state
        # The router runs again and offers the sign-in form, as in the browser.
        assert [t.key for t in at.text_input] == ["signin_username", "signin_password"]
        with factory.begin() as s:
            audit = export_frame(s, "audit")
        assert (audit["action"] == "sign-out").sum() == 1

    def test_radiologist_lands_on_read_a_study(self, registry_env, users):
        at = make_app(users["radiologist"]).run()
        assert at.title[0].value == "Read a study"

    def test_coordinator_lands_on_worklist(self, app_env, users):
        at = make_app(users["coordinator"]).run()
        assert at.title[0].value == "Worklist"


class TestAbout:
    def test_cards_and_caveats_are_shown(self, registry_env, users):
        at = open_page(make_app(users["radiologist"]), "about.py")
        assert not at.exception
        page = texts(at)
        assert "Withheld data" in page and "not a medical device" in page
        assert [e.label for e in at.expander] == ["tiny_a  (default)", "tiny_b"]

    def test_empty_registry_says_so(self, app_env, users):
        at = open_page(make_app(users["radiologist"]), "about.py")
        assert "No model is registered yet" in texts(at)
