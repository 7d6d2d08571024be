"""Shared pieces of every dashboard page: the signed-in user, role checks, the sidebar with the
disclaimer, the error boundary, and small renderers used by more than one page.

No page shows a raw traceback: :func:`run_page` wraps each page body in :func:`error_boundary`,
which turns the typed errors of ``core.imaging``, ``core.registry`` and ``db`` into a plain
``st.error`` message and logs anything unexpected (with its traceback) to the server log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.domain import APP_VERSION, DISCLAIMER, Role
from core.imaging import (
    ArchiveTooLargeError,
    FileProblem,
    ImageTooLargeError,
    ImagingError,
    UnsupportedTransferSyntaxError,
)
from core.registry import ModelIntegrityError, ModelNotFoundError, RegistryError
from services.database import DatabaseError, NotFoundError, PermissionDenied, RepositoryError, ValidationError

log = logging.getLogger("lungreview.dashboard")

#: Session-state key of the signed-in :class:`SessionUser`.
USER_KEY = "user"

#: Who may open which page (also enforced in ``db.repository`` for writes).
ALL_ROLES: frozenset[Role] = frozenset(Role)
READ_ROLES: frozenset[Role] = frozenset({Role.RADIOLOGIST, Role.ADMIN})
COMPARE_ROLES: frozenset[Role] = frozenset({Role.LEAD, Role.ADMIN})
RESULTS_ROLES: frozenset[Role] = frozenset({Role.COORDINATOR, Role.LEAD, Role.ADMIN})
ADMIN_ROLES: frozenset[Role] = frozenset({Role.ADMIN})


@dataclass(frozen=True)
class SessionUser:
    """The signed-in user as kept in ``st.session_state["user"]`` (no password material)."""

    id: int
    username: str
    display_name: str
    role: str

    @classmethod
    def from_row(cls, user) -> SessionUser:
        """From anything with ``id``, ``username``, ``display_name``, ``role`` (``services.accounts.Account``)."""
        return cls(id=int(user.id), username=user.username, display_name=user.display_name, role=str(user.role))


def current_user() -> SessionUser | None:
    """The signed-in user, or None."""
    user = st.session_state.get(USER_KEY)
    return user if isinstance(user, SessionUser) else None


def sign_in(user: SessionUser) -> None:
    """Remember ``user`` as signed in for this browser session."""
    st.session_state[USER_KEY] = user


def sign_out() -> None:
    """Forget the signed-in user and what the session cached (uploads, analyses, heatmaps).

    Widget values are left to Streamlit (deleting a widget's state from inside its own callback
    stops the rerun); the widgets of the signed-in pages are not rendered again, so their values go.
    """
    for key in list(st.session_state.keys()):
        if key == USER_KEY or str(key).startswith("_"):
            del st.session_state[key]


def refresh_user(active_users: Iterable) -> SessionUser | None:
    """Re-check the signed-in user against the database rows ``active_users`` (``list_users``).

    A user who was deactivated or deleted is signed out; a changed role takes effect at once.

    Returns:
        The refreshed user, or None when nobody is (any longer) signed in.
    """
    user = current_user()
    if user is None:
        return None
    row = next((u for u in active_users if int(u.id) == user.id), None)
    if row is None or not row.active:
        sign_out()
        st.session_state["signed_out_reason"] = "Your account was deactivated; ask an admin."
        return None
    fresh = SessionUser.from_row(row)
    if fresh != user:
        sign_in(fresh)
    return fresh


def role_label(role: str) -> str:
    """Human label of a role value ("lead" -> "Lead")."""
    return str(role).capitalize()


def allowed(user: SessionUser | None, roles: Iterable[Role]) -> bool:
    """True when ``user`` is signed in and has one of ``roles``."""
    return user is not None and user.role in {r.value for r in roles}


def refuse(roles: Iterable[Role], what: str) -> None:
    """Show the standard refusal for a page the user's role may not open."""
    names = ", ".join(sorted(role_label(r.value) for r in roles))
    user = current_user()
    st.error(
        f"Your role ({role_label(user.role) if user else 'not signed in'}) may not {what}. "
        f"This page is for: {names}. Ask an admin if you need access."
    )


def sidebar(user: SessionUser | None) -> None:
    """The disclaimer (every page), the app version and who is signed in."""
    with st.sidebar:
        st.warning(DISCLAIMER, icon="⚠️")
        if user is not None:
            st.caption(f"Signed in as **{user.display_name}** ({role_label(user.role)})")
        st.caption(f"LungReview {APP_VERSION} · research use only")


def message_for(exc: BaseException) -> str:
    """The message a user sees for a known error (what is wrong and what to do)."""
    if isinstance(exc, UnsupportedTransferSyntaxError):
        return f"This DICOM file is compressed in a way LungReview cannot decode: {exc}"
    if isinstance(exc, ArchiveTooLargeError | ImageTooLargeError):
        return f"The upload is too large: {exc}"
    if isinstance(exc, ImagingError):
        return f"The upload could not be read: {exc}"
    if isinstance(exc, ModelIntegrityError):
        return (
            "The model file fails its integrity check (its sha256 differs from the model card), so it "
            "was not loaded. Ask an admin to restore or retrain the model."
        )
    if isinstance(exc, ModelNotFoundError):
        return f"The model is not available: {exc}. Ask an admin to check the model registry."
    if isinstance(exc, RegistryError):
        return f"The model registry has a problem: {exc}. Ask an admin."
    if isinstance(exc, PermissionDenied):
        return f"Not allowed: {exc}"
    if isinstance(exc, ValidationError):
        return f"Please check your input: {exc}"
    if isinstance(exc, NotFoundError):
        return f"Not found: {exc}"
    if isinstance(exc, RepositoryError):
        return f"The database refused this: {exc}"
    if type(exc).__name__ == "InferenceError":  # core.inference, not imported here (TensorFlow)
        return f"The AI analysis could not run: {exc}"
    if isinstance(exc, DatabaseError):
        return f"The database cannot be used right now: {exc}. Ask an admin."
    return ""


@contextmanager
def error_boundary(where: str = "this page") -> Iterator[None]:
    """Show errors raised inside the block as a clear ``st.error``; never a traceback.

    Known errors (imaging, registry, repository, database) show their own message. Anything else
    is logged with its traceback under a short reference the user can quote to an admin.
    Streamlit's own control flow (``st.rerun``, ``st.stop``) passes through (BaseException).
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the boundary exists to catch everything
        text = message_for(exc)
        if text:
            log.info("%s: %s: %s", where, type(exc).__name__, exc)
            st.error(text)
        else:
            ref = uuid.uuid4().hex[:8]
            log.exception("unexpected error on %s (reference %s)", where, ref)
            st.error(
                f"Something went wrong on {where} (reference {ref}). Your saved work is safe; "
                "try again, and if it happens again tell an admin the reference."
            )


def flash(message: str) -> None:
    """Keep a success message to show after the next ``st.rerun`` (see :func:`run_page`)."""
    st.session_state["_flash"] = str(message)


def run_page(body: Callable[[SessionUser], None], *, roles: Iterable[Role], title: str, what: str) -> None:
    """Render a page: title, role check, then ``body(user)`` inside :func:`error_boundary`.

    Args:
        body: the page body; receives the signed-in user.
        roles: roles that may open the page; others see :func:`refuse`.
        title: page title. what: verb phrase for the refusal ("read studies").
    """
    roles = frozenset(roles)
    st.title(title)
    user = current_user()
    if user is None:
        st.error("Please sign in first.")
        return
    if not allowed(user, roles):
        refuse(roles, what)
        return
    note = st.session_state.pop("_flash", None)
    if note:
        st.success(note)
    with error_boundary(title):
        body(user)


def show_problems(problems: list[FileProblem]) -> None:
    """List files that could not be read, one line each, with the reason."""
    if not problems:
        return
    with st.expander(f"{len(problems)} file(s) could not be read; the others were read", expanded=True):
        for p in problems:
            st.warning(f"**{p.name}**: {p.message}")


def slice_score_figure(scores: np.ndarray, *, current: int | None = None, suspicious: int | None = None,
                       threshold: float | None = None, ood: np.ndarray | None = None,
                       score_name: str = "malignant") -> go.Figure:
    """Plotly line chart of a per-slice score along the series.

    Args:
        scores: float (n,) probabilities in [0, 1], slice order.
        current, suspicious: 0-based slice indices to mark (or None).
        threshold: decision threshold to draw as a dashed line, in [0, 1] (or None).
        ood: bool (n,) slices flagged out-of-distribution (drawn as grey crosses).
        score_name: name of the class whose probability is drawn.

    Returns:
        ``plotly.graph_objects.Figure``; x is the 1-based slice number.
    """
    y = np.asarray(scores, dtype=float)
    x = np.arange(1, y.size + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"P({score_name})",
                             hovertemplate="slice %{x}<br>P=%{y:.3f}<extra></extra>"))
    if ood is not None and np.any(ood):
        idx = np.flatnonzero(np.asarray(ood, dtype=bool))
        fig.add_trace(go.Scatter(x=x[idx], y=y[idx], mode="markers", name="out of distribution",
                                 marker={"symbol": "x", "size": 10, "color": "grey"}))
    if suspicious is not None:
        fig.add_trace(go.Scatter(x=[suspicious + 1], y=[y[suspicious]], mode="markers", name="most suspicious",
                                 marker={"symbol": "star", "size": 16, "color": "#E4572E"}))
    if current is not None:
        fig.add_vline(x=current + 1, line_dash="dot", line_color="#4FA3E0")
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#E4572E",
                      annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="slice", yaxis_title=f"P({score_name})", yaxis_range=[0, 1.02],
                      legend={"orientation": "h", "y": 1.15})
    if y.size <= 20:
        fig.update_xaxes(dtick=1)
    return fig
