"""Reading CT studies into HU series (being split into modules; see dicom.py for now)."""

from core.imaging.dicom import *  # noqa: F403
from core.imaging.dicom import METADATA_KEYS, __all__, _natural_key, main  # noqa: F401
