"""Users (admins only): list accounts, create users with a role, change roles, (de)activate.

Browser: a table of users; form "Create a user" with "Username", "Display name", "Role",
"Password" and the button "Create user" (success: "Created user ..."); form "Change a user" with
"User", "Role", "Active" and the button "Save changes"; under it the number of the user's active
sign-ins and the button "End all sign-ins of this user".
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.domain import Role
from dashboard.components import ADMIN_ROLES, SessionUser, flash, role_label, run_page
from dashboard.resources import get_session_factory
from services.accounts import change_account, create_account, list_accounts
from services.sessions import count_active_sessions, end_user_sessions

ROLES: tuple[str, ...] = tuple(r.value for r in Role)


def users_frame(rows) -> pd.DataFrame:
    """Display table of ``services.accounts.Account`` rows (no password hashes)."""
    return pd.DataFrame(
        [{"id": u.id, "username": u.username, "display name": u.display_name, "role": u.role,
          "active": bool(u.active)} for u in rows],
        columns=["id", "username", "display name", "role", "active"],
    )


def body(user: SessionUser) -> None:
    """The users page."""
    rows = list_accounts(get_session_factory(read_only=True))
    table = users_frame(rows)
    st.dataframe(table, hide_index=True, key="users_table")

    st.subheader("Create a user")
    with st.form("create_user", clear_on_submit=True):
        username = st.text_input("Username", key="new_username", help="3-64 letters, digits, _ . @ -")
        display = st.text_input("Display name", key="new_display_name")
        role = st.selectbox("Role", ROLES, index=0, key="new_role", format_func=role_label)
        password = st.text_input("Password", type="password", key="new_password",
                                 help="at least 8 characters; tell the user to keep it private")
        if st.form_submit_button("Create user", key="create_user_submit", type="primary"):
            created = create_account(get_session_factory(), user.id, username, display, role, password)
            flash(f"Created user {created.username!r} with the role {role_label(role)}.")
            st.rerun()

    st.subheader("Change a user")
    if table.empty:
        return
    options = table["id"].tolist()
    labels = {r.id: f"{r.username} ({r.display_name})" for r in rows}
    target = st.selectbox("User", options, key="change_user_id", format_func=lambda i: labels.get(i, str(i)))
    current = next(r for r in rows if r.id == target)
    with st.form("change_user"):
        new_role = st.selectbox("Role", ROLES, index=ROLES.index(current.role), key=f"change_role_{target}",
                                format_func=role_label)
        active = st.checkbox("Active", value=bool(current.active), key=f"change_active_{target}")
        if st.form_submit_button("Save changes", key="change_user_submit"):
            change_account(get_session_factory(), user.id, target, role=new_role, active=active)
            flash(f"Saved: {current.username} is now {role_label(new_role)}, "
                  f"{'active' if active else 'deactivated'}.")
            st.rerun()

    n_active = count_active_sessions(get_session_factory(read_only=True), target)
    st.caption(f"{current.username} is signed in in {n_active} browser session(s).")
    if st.button("End all sign-ins of this user", key=f"end_sessions_{target}", disabled=n_active == 0,
                 help="Every browser where this user is signed in goes back to the sign-in page at its next click."):
        ended = end_user_sessions(get_session_factory(), user.id, target)
        flash(f"Ended {ended} sign-in(s) of {current.username}; they must sign in again.")
        st.rerun()


if __name__ == "__main__":
    run_page(body, roles=ADMIN_ROLES, title="Users", what="manage users")
