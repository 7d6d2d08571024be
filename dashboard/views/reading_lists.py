"""Reading lists (pilot coordinators, admins): make a list, enter the reference standard.

Everything goes through ``services.reader_study.ReaderStudyService`` (it owns the transactions and the
rules); this page gathers input and shows the result.

Browser: heading "New reading list" with selectbox "Model", multiselects "Cases" (options
"Study <id> · <key> · AI <label>") and "Readers", text input "List name", selectbox "Mode",
checkbox "Randomise each reader's order", text input "Seed (blank: draw one)", button
"Create reading list". Heading "Reference standard" with selectbox "Reading list", the table of
cases, a form (selectbox "Case", radio "Reference finding", selectbox "Source", text input
"Note", button "Save reference standard") and a CSV upload ("Reference standard CSV", button
"Import CSV"), which reports rows that did not match. Heading "Reference lesions" with the
table of the list's lesions (slice 1-based), selectbox "Lesion to delete" and button "Delete
lesion"; a form (selectbox "Case of the lesion", number inputs "Slice (1 = first)", "x (pixel
column)", "y (pixel row)", "Diameter (mm)", text input "Lesion note", button "Save reference
lesion"); a CSV upload ("Reference lesions CSV", button "Import lesions CSV"); and "Import from
the LIDC XML": selectbox "Case for the LIDC XML", radio "LIDC XML from" (a file of the data folder
chosen in selectbox "LIDC XML file", or an upload "LIDC XML upload"), button "Import from the LIDC XML".
"""

from __future__ import annotations

import streamlit as st

from core.domain import Finding, Role
from dashboard.components import SessionUser, error_boundary, flash, run_page
from dashboard.resources import get_session_factory
from services.reader_study import (
    LESION_CSV_COLUMNS,
    REFERENCE_CSV_COLUMNS,
    ImportResult,
    LidcImportResult,
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
    lesions_section(user, svc, list_id, table)


def show_lidc(result: LidcImportResult) -> None:
    """What an LIDC XML import saved and left out."""
    st.success(f"{result.saved} reference lesion(s) saved from the LIDC XML"
               + (f"; {result.already_there} were entered already" if result.already_there else "") + ".")
    if result.lesions:
        st.dataframe([{"slice": z + 1, "x": x, "y": y, "diameter (mm)": d, "readers": k}
                      for z, x, y, d, k in result.lesions], hide_index=True, key="rl_lidc_result")
    st.caption(f"Not lesions by the LUNA16 rule: {result.fewer_readers} nodule(s) marked by fewer than 3 readers, "
               f"{result.small_marks} mark(s) of nodules under 3 mm; {result.marks_outside} mark(s) on no slice of "
               "the series.")


def lesions_section(user: SessionUser, svc: ReaderStudyService, list_id: int, cases) -> None:
    """Reference lesions of one list: table with delete, form, CSV import, LIDC XML import."""
    st.header("Reference lesions")
    st.caption("A lesion is its centre (slice, x = pixel column, y = pixel row) and its diameter in mm. Readers' "
               "marks within a lesion's radius localise it (the rule is on the pilot report).")
    lesions = svc.reference_lesions(user.id, list_id)
    if lesions.empty:
        st.info("No reference lesion yet for this list.")
    else:
        shown = lesions.assign(slice=lesions["slice_index"] + 1, study_key=lesions["study_key"].str[:12])
        st.dataframe(shown[["lesion_id", "position", "study_key", "slice", "x", "y", "diameter_mm", "source", "note"]],
                     hide_index=True, key="rl_lesion_table")
        by_id = {int(r.lesion_id): f"Lesion {r.lesion_id} · case {r.position} · slice {r.slice_index + 1} · "
                                   f"{r.diameter_mm:g} mm" for r in lesions.itertuples()}
        c1, c2 = st.columns([3, 1])
        lesion_id = c1.selectbox("Lesion to delete", list(by_id), format_func=by_id.get, key="rl_lesion_del_pick")
        if c2.button("Delete lesion", key="rl_lesion_delete"):
            with error_boundary("Reading lists"):
                svc.delete_reference_lesion(user.id, lesion_id)
                flash(f"Reference lesion {lesion_id} deleted.")
                st.rerun()
    case_labels = {int(r.case_id): f"Case {r.position} · study {r.study_id} · {r.study_key[:12]}"
                   for r in cases.itertuples()}
    with st.form("rl_lesion_form"):
        case_id = st.selectbox("Case of the lesion", list(case_labels), format_func=case_labels.get,
                               key="rl_lesion_case")
        c1, c2, c3, c4 = st.columns(4)
        slice_1 = c1.number_input("Slice (1 = first)", min_value=1, value=1, step=1, key="rl_lesion_slice")
        x = c2.number_input("x (pixel column)", min_value=0.0, value=0.0, step=1.0, key="rl_lesion_x")
        y = c3.number_input("y (pixel row)", min_value=0.0, value=0.0, step=1.0, key="rl_lesion_y")
        d = c4.number_input("Diameter (mm)", min_value=0.0, value=5.0, step=0.5, key="rl_lesion_d")
        note = st.text_input("Lesion note", key="rl_lesion_note", max_chars=2000, help="No patient identifiers.")
        saved = st.form_submit_button("Save reference lesion", key="rl_lesion_save")
    if saved:
        with error_boundary("Reading lists"):
            svc.add_reference_lesion(user.id, case_id, slice_index=int(slice_1) - 1, x=x, y=y, diameter_mm=d,
                                     note=note)
            flash("Reference lesion saved.")
            st.rerun()
    st.caption(f"CSV columns: {', '.join(LESION_CSV_COLUMNS)} (optionally series_key and note). slice counts from 1 "
               "(the first slice is 1, as the viewer shows it); x and y are pixel column and row; the study key as "
               "for the reference standard.")
    upload = st.file_uploader("Reference lesions CSV", type=["csv"], key="rl_lesion_csv")
    if st.button("Import lesions CSV", key="rl_lesion_import", disabled=upload is None):
        with error_boundary("Reading lists"):
            show_import(svc.import_reference_lesions_csv(user.id, list_id, upload.getvalue()))
    st.subheader("Import from the LIDC XML")
    st.caption("Nodules of 3 mm or more marked by at least 3 of the 4 LIDC readers (the LUNA16 rule) become reference "
               "lesions of the case, placed on its series from the study store.")
    lidc_case = st.selectbox("Case for the LIDC XML", list(case_labels), format_func=case_labels.get,
                             key="rl_lidc_case")
    source = st.radio("LIDC XML from", ["the data folder", "an upload"], horizontal=True, key="rl_lidc_source")
    path = xml = None
    if source == "the data folder":
        files = svc.lidc_xml_files(user.id)
        if not files:
            st.info("No LIDC XML file in the data folder.")
        path = st.selectbox("LIDC XML file", files, key="rl_lidc_file") if files else None
    else:
        up = st.file_uploader("LIDC XML upload", type=["xml"], key="rl_lidc_upload")
        xml = up.getvalue() if up is not None else None
    if st.button("Import from the LIDC XML", key="rl_lidc_import", disabled=path is None and xml is None):
        with error_boundary("Reading lists"):
            show_lidc(svc.import_reference_lesions_lidc(user.id, lidc_case, path=path, xml=xml))


def body(user: SessionUser) -> None:
    """The reading-lists page."""
    svc = service()
    new_list_section(user, svc)
    reference_section(user, svc)


if __name__ == "__main__":
    run_page(body, roles=COORDINATOR_PAGE_ROLES, title="Reading lists", what="make reading lists")
