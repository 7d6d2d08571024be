"""De-identification: pseudonymous study and series keys, names without folders, and the few
free-text values that may leave :mod:`core.imaging`.

No raw UID, patient name, patient id, birth date, address or free-text comment leaves the package:
studies and series are known by keyed hashes (:func:`study_key_for`), dates by their year
(:func:`year_of`), file names by their base name (:func:`base_name`, folders and ZIP member paths often
hold patient names or ids), and a series description only when it holds no part of the patient's
name or id (:func:`deidentified_description`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import PurePosixPath
from typing import Any

from core.settings import get_settings

__all__ = ["base_name", "deidentified_description", "study_key_for", "year_of"]


def study_key_for(uid: str) -> str:
    """Pseudonymous key of a UID (or content hash): HMAC-SHA256 keyed with the study-key secret.

    Args:
        uid: a DICOM UID or any identifying string.

    Returns:
        The first 32 hex characters of HMAC-SHA256(``get_settings().study_key_secret()``, uid)
        (RFC 2104). Stable for one secret; not reversible without it.
    """
    return hmac.new(get_settings().study_key_secret(), uid.encode(), hashlib.sha256).hexdigest()[:32]


def base_name(name: str) -> str:
    """The last part of a file name or ZIP member path (``/`` and ``\\`` both separate folders)."""
    return PurePosixPath(name.replace("\\", "/")).name


def year_of(value: Any) -> int | None:
    """The year of a DICOM DA/DT value ("20190304" -> 2019), else None (PS3.5 6.2, VR DA and DT)."""
    text = str(value or "").strip()
    return int(text[:4]) if len(text) >= 4 and text[:4].isdigit() else None


def deidentified_description(description: str | None, patient_name: str | None, patient_id: str | None) -> str | None:
    """A SeriesDescription that may be shown, or None.

    Args:
        description: the SeriesDescription text (or None).
        patient_name: PatientName as text (components separated by ``^``, PS3.5 6.2 VR PN), or None.
        patient_id: PatientID, or None.

    Returns:
        The stripped description, or None when it is empty or contains (case-insensitively) any
        name component or the id of two characters or more.
    """
    desc = (description or "").strip()
    if not desc:
        return None
    tokens = re.split(r"[\^\s,=]+", patient_name or "") + [patient_id or ""]
    low = desc.lower()
    if any(len(t) >= 2 and t.lower() in low for t in tokens):
        return None
    return desc
