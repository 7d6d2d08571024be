"""About: what LungReview is and is not, what the models were trained on, their cards.

Browser: headings "Not a diagnostic device", "Data and its limits", "Models"; one expander per
registered model titled with the model id.
"""

from __future__ import annotations

import streamlit as st

from core.domain import APP_VERSION, DISCLAIMER
from core.registry import RegistryError, default_model_id, list_cards
from dashboard.components import ALL_ROLES, SessionUser, run_page


def card_facts(card) -> dict[str, str]:
    """Display rows of a model card (data, split, starting weights, training, decision)."""
    t = dict(card.training or {})
    spec = card.preprocessing
    hyper = t.get("hyperparameters")
    return {
        "Architecture": f"{card.architecture} ({card.task}: {', '.join(card.class_names)})",
        "Trained on": str(t.get("dataset", "not recorded")),
        "Split manifest": f"{t.get('split_manifest', 'not recorded')} (sha256 {str(t.get('split_sha256', ''))[:12]}...)",
        "Starting weights": str(t.get("starting_weights", t.get("weights", "not recorded"))),
        "Epochs / time": f"{t.get('epochs', '?')} epochs, {t.get('seconds', '?')} s, seed {t.get('seed', '?')}",
        "Hyperparameters": ", ".join(f"{k}={v}" for k, v in hyper.items()) if isinstance(hyper, dict) else str(hyper),
        "Input": f"{spec.size}x{spec.size}x{spec.channels}, window C {spec.window.center:g} / W {spec.window.width:g} HU",
        "Decision thresholds": ", ".join(f"{k} >= {v:.2f}" for k, v in card.thresholds.items()) or "argmax",
        "Grad-CAM layer": card.gradcam_layer,
        "Model file": f"{card.model_file}, {card.size_bytes / 1e6:.1f} MB, sha256 {card.sha256[:12]}...",
        "Git commit / date": f"{t.get('git_commit', '?')} / {t.get('date', '?')}",
    }


def body(user: SessionUser) -> None:
    """The about page."""
    st.header("Not a diagnostic device")
    st.warning(DISCLAIMER)
    st.write(
        "LungReview shows an AI read of chest CT slices (normal, benign or malignant) next to the slice "
        "and a Grad-CAM heatmap, and records the radiologist's own read, so that a pilot can measure how "
        "often radiologists agree with each model and how usable the tool is. "
        f"Version {APP_VERSION}."
    )
    st.header("Data and its limits")
    st.markdown(
        "- The models were trained on **IQ-OTH/NCCD** (Iraq-Oncology Teaching Hospital / National Center for "
        "Cancer Diseases, Mendeley Data doi:10.17632/bhmdr45bh2, CC BY 4.0): JPG slices from 110 cases, "
        "exported with a display window, so Hounsfield units are *estimated* from grey values.\n"
        "- The dataset has no patient ids: slices were grouped into pseudo-patients (consecutive, alike "
        "slices and duplicates) and split **by group** (70/15/15), so neighbouring slices of one patient "
        "never sit on both sides of the split. Random splits by image are how 98-99 % accuracies get "
        "reported for this dataset; ours are lower and honest.\n"
        "- **Withheld data:** this copy holds 903 of the 1097 slices; the rest is kept aside to evaluate "
        "the shipped models independently. The metrics on *Compare models* come from our own test split, "
        "not from that withheld part, and from one hospital and scanner family: expect lower performance "
        "elsewhere.\n"
        "- DICOM studies (e.g. Lung-PET-CT-Dx) are read in real HU, but the models never saw such data in "
        "training: the out-of-distribution guard flags slices unlike the training data."
    )
    st.header("Models")
    try:
        cards = list_cards()
    except RegistryError as exc:
        st.error(f"The model registry cannot be read: {exc}")
        return
    if not cards:
        st.info("No model is registered yet. Train one with `python -m models.train`.")
        return
    try:
        default = default_model_id()
    except RegistryError:
        default = None
    for card in cards:
        title = card.id + ("  (default)" if card.id == default else "")
        with st.expander(title, expanded=card.id == default):
            st.table({"": list(card_facts(card).keys()), "value": list(card_facts(card).values())})
            if card.intended_use:
                st.markdown(f"**Intended use:** {card.intended_use}")
            if card.limitations:
                st.markdown("**Limitations:**\n" + "\n".join(f"- {x}" for x in card.limitations))


if __name__ == "__main__":
    run_page(body, roles=ALL_ROLES, title="About LungReview", what="read this page")
