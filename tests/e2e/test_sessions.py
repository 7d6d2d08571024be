"""A sign-in survives a reload and a new tab; sign-out ends it everywhere, in a real browser.

Against ``streamlit run`` with its own empty database (fixtures in conftest.py). Every wait is on
the app's state: visible text, buttons, and the session cookie in ``document.cookie``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from dashboard.auth import COOKIE_NAME
from services.sessions import hash_token
from tests.e2e.helpers import create_admin

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "admin-pass-123"
WAIT = 60_000  # ms; a cold start on two busy cores


def _signed_in(page) -> None:
    page.get_by_text("Signed in as").first.wait_for(timeout=WAIT)
    page.get_by_role("button", name="Sign out").wait_for(timeout=WAIT)


def _sign_in_page(page) -> None:
    page.get_by_role("button", name="Sign in").wait_for(timeout=WAIT)
    assert page.get_by_text("Signed in as").count() == 0


def _wait_for_cookie(page, present: bool) -> None:
    test = f"document.cookie.split('; ').some(c => c.startsWith('{COOKIE_NAME}=') && c.length > {len(COOKIE_NAME) + 1})"
    page.wait_for_function(test if present else f"!({test})", timeout=WAIT)


def _cookie(ctx) -> dict:
    found = [c for c in ctx.cookies() if c["name"] == COOKIE_NAME]
    assert len(found) == 1, f"expected one {COOKIE_NAME} cookie, got {found}"
    return found[0]


def test_sign_in_survives_reload_and_new_tab_and_sign_out_ends_it(app_server, new_page, shot):
    base, var = app_server
    page = new_page(1400, 1000)
    ctx = page.context
    create_admin(page, base, PASSWORD)
    _signed_in(page)
    _wait_for_cookie(page, present=True)
    cookie = _cookie(ctx)
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"

    # The database holds the token's SHA-256, never the token.
    with closing(sqlite3.connect(var / "e2e.db")) as conn:
        rows = conn.execute("SELECT token_hash, revoked_at FROM auth_sessions").fetchall()
    assert rows == [(hash_token(cookie["value"]), None)]

    page.reload()
    _signed_in(page)
    shot(page, "sessions_01_after_reload")

    other = new_page(context=ctx)
    other.goto(base)
    _signed_in(other)

    page.get_by_role("button", name="Sign out").click()
    _sign_in_page(page)
    _wait_for_cookie(page, present=False)
    page.reload()
    _sign_in_page(page)
    shot(page, "sessions_02_after_sign_out_and_reload")

    # The token itself is dead on the server, not only gone from the browser: put it back.
    ctx.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path", "expires", "sameSite")}])
    other.reload()
    _sign_in_page(other)
    with closing(sqlite3.connect(var / "e2e.db")) as conn:
        ended = conn.execute("SELECT ended_reason FROM auth_sessions").fetchall()
    assert ended == [("sign-out",)]
