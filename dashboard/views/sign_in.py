"""Sign in, or on first run create the first admin account (no default password is shipped).

Browser: on first run the form "Create the first admin" has the fields "Username", "Display name",
"Password", "Repeat password" and the button "Create admin account"; afterwards the form
"Sign in" has "Username", "Password" and the button "Sign in".
"""

from __future__ import annotations

import streamlit as st

from dashboard.auth import remember_sign_in
from dashboard.components import SessionUser, error_boundary, sign_in
from dashboard.resources import get_session_factory
from services.accounts import authenticate, create_first_admin, first_run


def first_run_form() -> None:
    """The form that creates the first user, an admin, and signs them in."""
    st.info("No accounts exist yet. Create the first admin account; the admin then adds the other users.")
    with st.form("first_admin", border=True):
        st.subheader("Create the first admin")
        username = st.text_input("Username", key="first_username", help="3-64 letters, digits, _ . @ -")
        display = st.text_input("Display name", key="first_display_name")
        pw1 = st.text_input("Password", type="password", key="first_password", help="at least 8 characters")
        pw2 = st.text_input("Repeat password", type="password", key="first_password2")
        submitted = st.form_submit_button("Create admin account", key="first_submit", type="primary")
    if submitted:
        if pw1 != pw2:
            st.error("The two passwords differ; type the same password twice.")
            return
        account = create_first_admin(get_session_factory(), username, display, pw1)
        session_user = SessionUser.from_row(account)
        sign_in(session_user)
        remember_sign_in(session_user)
        st.rerun()


def sign_in_form() -> None:
    """The username/password form; a wrong name, password or a deactivated account get one message."""
    reason = st.session_state.pop("signed_out_reason", None)
    if reason:
        st.warning(reason)
    with st.form("sign_in", border=True):
        username = st.text_input("Username", key="signin_username")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", key="signin_submit", type="primary")
    if submitted:
        account = authenticate(get_session_factory(), username, password)
        if account is None:
            st.error("Wrong username or password, or the account is deactivated. Try again or ask an admin.")
            return
        session_user = SessionUser.from_row(account)
        sign_in(session_user)
        remember_sign_in(session_user)
        st.rerun()


def render() -> None:
    """The page: first-run form when there are no users, else the sign-in form."""
    st.title("LungReview")
    st.caption("AI second reader for lung cancer on chest CT (normal / benign / malignant): research use only.")
    with error_boundary("Sign in"):
        if first_run(get_session_factory(read_only=True)):
            first_run_form()
        else:
            sign_in_form()


if __name__ == "__main__":
    render()
