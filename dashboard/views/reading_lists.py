"""Reading lists (pilot coordinators, admins): make a list, enter the reference standard.

Everything goes through ``services.reader_study.ReaderStudyService`` (it owns the transactions and the
rules); this page gathers input and shows the result.

Browser: heading "New reading list" with selectbox "Model", multiselects "Cases" (options
"Study <id> · <key> · AI <label>") and "Readers", text input "List name", selectbox "Mode",
checkbox "Randomise each reader's order", text input "Seed (blank: draw one)", button
"Create reading list". Heading "Reference standard" with selectbox "Reading list", the table of
cases, a form (selectbox "Case", radio "Reference finding", selectbox "Source", text input
"Note", button "Save reference standard") and a CSV upload ("Reference standard CSV", button
"Import CSV"), which reports rows that did not match.
"""

from __future__ import annotations

import streamlit as st

from core.domain import Finding, Role
from dashboard.components import SessionUser, flash, run_page
from dashboard.resources import get_session_factory
from services.reader_study import (
    REFERENCE_CSV_COLUMNS,
    ImportResult,
    ReaderStudyService,
    ReadingMode,
    ReferenceSource,
)

#: Roles that open this page (the service checks again).
COORDINATOR_PAGE_ROLES = frozenset({Role.COORDINATOR, Role.ADMIN})

MODE_LABELS: dict[str, str] = {
    ReadingMode.AI_AFTER_UNAIDED.value: "AI after an unaided read",
    ReadingMode.AI_AT_ONCE.value: "AI shown at once",
    ReadingMode.NO_AI.value: "No AI",
}


def service() -> ReaderStudyService:
    """The reader-study service on the app's database."""
    return ReaderStudyService(get_session_factory())


def parse_seed(text: str) -> int | None:
    """The seed typed by the coordinator: None when blank; a whole number 0 .. 2**31 - 1.

    Raises:
        ValueError: not a whole number in that range (message says so).
    """
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**31:
        raise ValueError("The seed must be a whole number from 0 to 2147483646, or blank to draw one.")
    return int(text)


def new_list_section(user: SessionUser, svc: ReaderStudyService) -> None:
    """The form that makes a reading list."""
    st.header("New reading list")
    models = svc.models_with_results(user.id)
    if not models:
        st.info("No study has an AI result yet. Analyse studies on Read a study first; they become cases here.")
        return
    model = st.selectbox("Model", models, key="rl_model", help="The model whose result the readers see.")
    cand = svc.candidate_cases(user.id, model)
    labels = {(int(r.study_id), str(r.series_key)):
              f"Study {r.study_id} · {r.study_key[:12]} · series {str(r.series_key)[:8]} · "
              f"{r.n_slices} slice(s) · AI {r.ai_label}"
              for r in cand.itertuples()}
    readers = dict(svc.reader_candidates(user.id))
    with st.form("rl_new"):
        name = st.text_input("List name", key="rl_name", max_chars=128)
        cases = st.multiselect("Cases", list(labels), format_func=labels.get, key="rl_cases")
        chosen = st.multiselect("Readers", list(readers), format_func=readers.get, key="rl_readers")
        mode = st.selectbox("Mode", list(MODE_LABELS), format_func=MODE_LABELS.get, key="rl_mode")
        randomise = st.checkbox("Randomise each reader's order", value=True, key="rl_randomise")
        seed_text = st.text_input("Seed (blank: draw one)", key="rl_seed")
        submitted = st.form_submit_button("Create reading list", key="rl_create", type="primary")
    if not submitted:
        return
    try:
        seed = parse_seed(seed_text)
    except ValueError as exc:
        st.error(str(exc))
        return
    summary = svc.create_list(user.id, name=name, cases=cases, readers=chosen, model_id=model, mode=mode,
                              randomise=randomise, seed=seed)
    flash(f"Reading list '{summary.name}' created: {summary.n_cases} cases, {len(summary.reader_ids)} readers, "
          f"seed {summary.seed}.")
    st.rerun()


def show_import(result: ImportResult) -> None:
    """Saved count and the rows that did not match."""
    st.success(f"{result.saved} reference standard(s) saved.")
    if result.unmatched:
        st.warning(f"{len(result.unmatched)} row(s) were not saved:")
        st.dataframe([{"line": u.line, "study key": u.study_key, "reason": u.reason} for u in result.unmatched],
                     hide_index=True, key="rl_unmatched")


def reference_section(user: SessionUser, svc: ReaderStudyService) -> None:
    """The reference standard of one list: table, form, CSV import."""
    st.header("Reference standard")
    lists = svc.lists(user.id)
    if not lists:
        st.info("No reading list yet.")
        return
    by_id = {x.list_id: x for x in lists}
    list_id = st.selectbox("Reading list", list(by_id), key="rl_ref_list",
                           format_func=lambda i: f"{by_id[i].name} ({by_id[i].n_with_reference} of "
                                                 f"{by_id[i].n_cases} with a reference)")
    table = svc.reference_table(user.id, list_id)
    st.dataframe(table.assign(study_key=table["study_key"].str[:12]), hide_index=True, key="rl_ref_table")
    studies = {int(r.study_id): f"Case {r.position} · study {r.study_id} · {r.study_key[:12]}"
               for r in table.itertuples()}
    with st.form("rl_ref_form"):
        study_id = st.selectbox("Case", list(studies), format_func=studies.get, key="rl_ref_case")
        finding = st.radio("Reference finding", [f.value for f in Finding], horizontal=True, key="rl_ref_finding")
        source = st.selectbox("Source", [s.value for s in ReferenceSource], key="rl_ref_source")
        note = st.text_input("Note", key="rl_ref_note", max_chars=2000, help="No patient identifiers.")
        saved = st.form_submit_button("Save reference standard", key="rl_ref_save")
    if saved:
        svc.set_reference(user.id, study_id=study_id, finding=finding, source=source, note=note)
        flash("Reference standard saved.")
        st.rerun()
    st.caption(f"CSV columns: {', '.join(REFERENCE_CSV_COLUMNS)} (and optionally note). The study key may be the "
               "full pseudonymous key or its first 12 characters, as on the worklist.")
    upload = st.file_uploader("Reference standard CSV", type=["csv"], key="rl_ref_csv")
    if st.button("Import CSV", key="rl_ref_import", disabled=upload is None):
        show_import(svc.import_reference_csv(user.id, list_id, upload.getvalue()))


def body(user: SessionUser) -> None:
    """The reading-lists page."""
    svc = service()
    new_list_section(user, svc)
    reference_section(user, svc)


if __name__ == "__main__":
    run_page(body, roles=COORDINATOR_PAGE_ROLES, title="Reading lists", what="make reading lists")
