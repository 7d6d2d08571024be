"""LungReview dashboard: the ``st.navigation`` router.

Run with ``make run`` (``streamlit run dashboard/app.py``). Every page module lives in
``dashboard/views/``; this script signs users in and out, shows the disclaimer in the sidebar and
offers each role its pages. Pages a role may not open are registered hidden (a direct link shows
a refusal from the page itself, which checks the role again); writes are checked in ``db`` too.
``core``, ``db`` and ``dashboard`` import because ``make`` installs the project editable
(``pip install --no-deps -e .``); ``python -m streamlit run`` from the repository root also works.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from core.domain import Role
from dashboard.components import (
    ADMIN_ROLES,
    ALL_ROLES,
    COMPARE_ROLES,
    READ_ROLES,
    RESULTS_ROLES,
    error_boundary,
    refresh_user,
    sidebar,
    sign_out,
)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
PAGES_DIR = Path(__file__).resolve().parent / "views"

#: (section, file, title, icon, roles, url path)
PAGES: tuple[tuple[str, str, str, str, frozenset[Role], str], ...] = (
    ("Review", "read_study.py", "Read a study", ":material/radiology:", READ_ROLES, "read"),
    ("Review", "worklist.py", "Worklist", ":material/list_alt:", ALL_ROLES, "worklist"),
    ("Models", "compare.py", "Compare models", ":material/compare:", COMPARE_ROLES, "compare"),
    ("Models", "about.py", "About", ":material/info:", ALL_ROLES, "about"),
    ("Pilot", "feedback.py", "Pilot feedback", ":material/rate_review:", ALL_ROLES, "feedback"),
    ("Pilot", "feedback_results.py", "Feedback results", ":material/monitoring:", RESULTS_ROLES, "results"),
    ("Pilot", "reading_lists.py", "Reading lists", ":material/playlist_add:", frozenset({Role.COORDINATOR, Role.ADMIN}),
     "reading-lists"),
    ("Pilot", "my_reading_list.py", "My reading list", ":material/checklist:", READ_ROLES, "my-reading-list"),
    ("Pilot", "pilot_report.py", "Pilot report", ":material/summarize:", RESULTS_ROLES, "pilot-report"),
    ("Admin", "admin.py", "Users", ":material/manage_accounts:", ADMIN_ROLES, "users"),
)


def _sign_out_clicked(user_id: int) -> None:
    from dashboard.auth import forget_sign_in
    from dashboard.resources import get_session_factory
    from services.accounts import record_sign_out

    with error_boundary("sign-out"):
        record_sign_out(get_session_factory(), user_id)
    with error_boundary("sign-out"):
        forget_sign_in()
    sign_out()


def main() -> None:
    """Build the navigation for the current user and run the selected page."""
    st.set_page_config(page_title="LungReview", page_icon=":material/pulmonology:", layout="wide")
    from dashboard.auth import restore_or_check, write_pending_cookie
    from dashboard.resources import get_session_factory, keep_keras_state, warm_default_model
    from services.accounts import list_accounts

    keep_keras_state()  # Streamlit would clear the Keras session after every run (1-2 s each)
    warm_default_model()  # once per process: the first analysis then finds the model loaded and warm

    with error_boundary("sign-in"):
        restore_or_check()
    users = None
    with error_boundary("start-up"):
        users = list_accounts(get_session_factory(read_only=True))
    if users is None:
        sidebar(None)
        st.stop()
    user = refresh_user(users)
    sidebar(user)
    write_pending_cookie()
    if user is None:
        # Every page's address leads to the sign-in form (no "page not found" after signing out;
        # a deep link opens its page once the user has signed in).
        sign_in_page = PAGES_DIR / "sign_in.py"
        pages = [st.Page(sign_in_page, title="Sign in", icon=":material/login:", url_path="signin", default=True)]
        pages += [st.Page(sign_in_page, title=title, url_path=url, visibility="hidden")
                  for _, _, title, _, _, url in PAGES]
        st.navigation(pages).run()
        return
    st.sidebar.button("Sign out", key="sign_out", on_click=_sign_out_clicked, args=(user.id,),
                      icon=":material/logout:")
    default = "read_study.py" if user.role == Role.RADIOLOGIST.value else "worklist.py"
    sections: dict[str, list] = {}
    for section, file, title, icon, roles, url in PAGES:
        visible = user.role in {r.value for r in roles}
        sections.setdefault(section, []).append(
            st.Page(PAGES_DIR / file, title=title, icon=icon, url_path=url, default=file == default,
                    visibility="visible" if visible else "hidden")
        )
    st.navigation(sections).run()


main()
