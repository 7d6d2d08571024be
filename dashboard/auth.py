"""The sign-in cookie: a sign-in survives a reload and a new tab, and ends with its server-side session.

How it works (the rules themselves live in ``services.sessions``):

* After a password sign-in, :func:`remember_sign_in` starts a server-side session and keeps
  its token in this Streamlit session only; :func:`write_pending_cookie` then hands it to the
  browser as the cookie :data:`COOKIE_NAME` (``SameSite=Strict``, ``Path=/``, ``Secure`` when
  the app is served over HTTPS, expiring with the session's absolute lifetime).
* On a reload or in a new tab Streamlit starts a new session; :func:`restore_or_check` reads
  the cookie with Streamlit's own ``st.context.cookies`` (sent with the page's WebSocket
  request) and, if ``services.sessions.resume_session`` accepts it, signs the user in again.
* On every run of a signed-in session the token is checked again, so sign-out, the idle
  timeout, the absolute lifetime, an admin's "end sessions" and a deactivation end the sign-in
  at the next click in every tab. :func:`forget_sign_in` (sign-out) ends the session on the
  server and overwrites the cookie with an expired, empty one.

Streamlit can read cookies but not set them, so the cookie is written by the ``CookieManager``
component of ``extra-streamlit-components`` (a hidden iframe from the app's own origin that
sets ``document.cookie``). A cookie set from JavaScript cannot be ``HttpOnly``; the token is
therefore worth no more than the server-side row behind it, which sign-out and the timeouts end.
"""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime

import streamlit as st

from core.settings import get_settings
from dashboard.components import SessionUser, current_user, sign_in, sign_out
from dashboard.resources import get_session_factory
from services.sessions import SessionEndReason, end_session, resume_session, start_session

log = logging.getLogger("lungreview.dashboard")

#: Name of the browser cookie that holds the session token.
COOKIE_NAME = "lungreview_session"

#: Session-state keys. Names starting with "_" are dropped by ``components.sign_out``.
_TOKEN = "_auth_token"
_WRITE = "auth_cookie_write"  # pending cookie write: {"value", "expires", "key"}; survives sign-out
_REFUSED = "auth_refused_cookie"  # a cookie value already refused in this Streamlit session

_counter = itertools.count()


def _reason_message(reason: SessionEndReason | None) -> str:
    settings = get_settings()
    return {
        SessionEndReason.IDLE: f"You were signed out after {settings.session_idle_min} minutes without "
                               "activity. Sign in again to go on.",
        SessionEndReason.EXPIRED: f"A sign-in lasts at most {settings.session_max_hours} hours. "
                                  "Sign in again to go on.",
        SessionEndReason.ENDED_BY_ADMIN: "An admin ended your sign-in. Sign in again to go on.",
        SessionEndReason.USER_INACTIVE: "Your account was deactivated; ask an admin.",
    }.get(reason, "")


def _schedule_cookie(value: str, expires: datetime) -> None:
    """Ask :func:`write_pending_cookie` to write the cookie on this run and until the browser confirms."""
    st.session_state[_WRITE] = {"value": value, "expires": expires.astimezone(UTC).isoformat(),
                                "key": f"lungreview_cookie_{next(_counter)}"}


def remember_sign_in(user: SessionUser) -> None:
    """Start a server-side session for ``user`` (just signed in) and schedule the cookie.

    Raises:
        db.repository.PermissionDenied: the account is deactivated.
    """
    issued = start_session(get_session_factory(), user.id)
    st.session_state[_TOKEN] = issued.token
    _schedule_cookie(issued.token, issued.expires_at)


def _ended(reason: SessionEndReason | None, token: str) -> None:
    st.session_state[_REFUSED] = token
    message = _reason_message(reason)
    if message:
        st.session_state["signed_out_reason"] = message
    _schedule_cookie("", datetime(1970, 1, 1, tzinfo=UTC))


def restore_or_check() -> None:
    """Check the signed-in user's token, or sign a user in from the browser's cookie.

    Call once at the top of every run, before ``components.refresh_user``. A session that has
    ended signs the user out and leaves the reason in ``st.session_state["signed_out_reason"]``
    (shown by the sign-in page). A user signed in without a token (e.g. a page test that sets
    ``st.session_state["user"]``) is left as is.
    """
    token = st.session_state.get(_TOKEN)
    if current_user() is not None:
        if token:
            check = resume_session(get_session_factory(), token, read_factory=get_session_factory(read_only=True))
            if not check.valid:
                log.info("session %s of user %s ended: %s", check.session_id, current_user().id, check.ended)
                sign_out()
                _ended(check.ended, token)
        return
    cookie = st.context.cookies.get(COOKIE_NAME)
    if not cookie or cookie == st.session_state.get(_REFUSED):
        return
    check = resume_session(get_session_factory(), cookie, read_factory=get_session_factory(read_only=True))
    if check.valid:
        sign_in(SessionUser.from_row(check.user))
        st.session_state[_TOKEN] = cookie
    else:
        _ended(check.ended if check.ended is not SessionEndReason.SIGN_OUT else None, cookie)


def forget_sign_in() -> None:
    """Sign-out: end this browser's server-side session and clear its cookie (call before ``sign_out``)."""
    token = st.session_state.get(_TOKEN)
    if token:
        end_session(get_session_factory(), token)
        _ended(None, token)


def write_pending_cookie() -> None:
    """Render the hidden cookie component while a cookie write is pending (a no-op otherwise).

    The component reports back once the browser has stored the cookie (a rerun with the value
    True under the write's key); the write is then done and the component is no longer rendered.
    """
    pending = st.session_state.get(_WRITE)
    if not pending:
        return
    if st.session_state.get(pending["key"]) is True:
        del st.session_state[_WRITE]
        return
    import extra_streamlit_components as stx

    manager = stx.CookieManager(key=f"{pending['key']}_manager")
    manager.set(COOKIE_NAME, pending["value"], key=pending["key"], path="/",
                expires_at=datetime.fromisoformat(pending["expires"]), same_site="strict",
                secure=True if str(st.context.url or "").startswith("https://") else None)
