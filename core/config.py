"""LungReview settings, closed choices and window presets: the one place for them.

Every setting is read from an environment variable with a documented default. No default is an
absolute path and none depends on the working directory: relative defaults are resolved against
the repository root (the folder that holds ``core/``).

=============================  ==========================================================
environment variable           default
=============================  ==========================================================
``LUNGREVIEW_DATA_DIR``        ``<repo>/../shared/datasets``
``LUNGREVIEW_DB_URL``          ``sqlite:///<repo>/var/lungreview.db``
``LUNGREVIEW_REGISTRY_DIR``    ``<repo>/models/registry``
``LUNGREVIEW_VAR_DIR``         ``<repo>/var`` (git-ignored: database, secrets, caches)
``LUNGREVIEW_STUDY_KEY``       secret for pseudonymous study keys; default: a random key
                               created once in ``<var>/study_key.secret``
``LUNGREVIEW_MAX_UPLOAD_MB``   ``500`` (also ``server.maxUploadSize`` in .streamlit/config.toml)
``LUNGREVIEW_MAX_ZIP_MB``      ``2048`` uncompressed bytes a ZIP may expand to
``LUNGREVIEW_MAX_PIXELS``      ``40000000`` pixels in one image (frame), about 6300 x 6300
``LUNGREVIEW_RUNTIME``         ``auto``: probabilities from OpenVINO when it is installed and
                               agrees with Keras within 1e-4, else TensorFlow; ``openvino``
                               or ``tensorflow`` force one (see ``core/runtime.py``)
``LUNGREVIEW_WEIGHTS_DIR``     ``<repo>/../shared/weights``: pretrained starting weights for
                               transfer learning (``models/transfer.py``)
=============================  ==========================================================
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[1]
APP_VERSION = "0.1.0"
DISCLAIMER = (
    "LungReview is a research tool. It is not a medical device and must not be used for diagnosis: "
    "every AI output is a suggestion for a qualified radiologist to check."
)


class Finding(StrEnum):
    """A read of a study, by the AI or by a radiologist; ordered normal < benign < malignant."""

    NORMAL = "normal"
    BENIGN = "benign"
    MALIGNANT = "malignant"


#: Class order of every model output and confusion matrix (rows true, columns predicted).
CLASS_NAMES: tuple[str, ...] = tuple(f.value for f in Finding)


class Agreement(StrEnum):
    """The radiologist's agreement with the AI's read."""

    AGREE = "agree"
    DISAGREE = "disagree"
    PARTLY = "partly"


class Role(StrEnum):
    """What a signed-in user may do."""

    RADIOLOGIST = "radiologist"
    LEAD = "lead"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


class WindowPreset(StrEnum):
    """Named display windows. ``DICOM`` means the file's own WindowCenter/WindowWidth."""

    LUNG = "lung"
    MEDIASTINUM = "mediastinum"
    BONE = "bone"
    IQ_OTHNCCD = "iq-othnccd"
    DICOM = "dicom"


@dataclass(frozen=True)
class Window:
    """A VOI window in Hounsfield units: ``center`` (C) and ``width`` (W), both in HU.

    ``floor`` is the output level, in [0, 1), of the window's lower edge. It is 0 for every
    standard display window (DICOM PS3.3 C.11.2.1.2.1). Some 8-bit exports map the window to
    [floor, 1] and everything below it to 0; the IQ-OTH/NCCD JPGs do so with a floor of about
    128/255 (see ``WINDOW_PRESETS``).
    """

    center: float
    width: float
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not self.width >= 1:
            raise ValueError(f"window width must be at least 1 HU, got {self.width}")
        if not 0.0 <= self.floor < 1.0:
            raise ValueError(f"window floor must lie in [0, 1), got {self.floor}")


#: Standard CT display windows (centre/width in HU), as in common radiology practice
#: (e.g. Radiopaedia "Windowing (CT)"): lung 1500/-600, mediastinum 350/50, bone 2000/500.
#: IQ_OTHNCCD is the window the IQ-OTH/NCCD JPGs appear to have been exported with. They are not
#: a plain linear window: 92 % of pixels are grey 0-7 and the rest 122-255, nothing in between,
#: so the export maps the window to [128, 255] and all below it to black (floor 128/255).
#: Centre and width were estimated with ``core.windowing.estimate_export_window`` from every
#: third JPG against the B40f series of the Lung-PET-CT-Dx study (HU): best C 0 / W 260 HU
#: (neighbours C -20..0, W 240..300 fit within 0.3 grey levels; mean quantile error 5 grey
#: levels). The dataset's description states W 350-1200, C 50-600; the best fit inside that
#: range (C 600 / W 360) is twice as far off (10.5 grey levels).
WINDOW_PRESETS: dict[WindowPreset, Window] = {
    WindowPreset.LUNG: Window(center=-600.0, width=1500.0),
    WindowPreset.MEDIASTINUM: Window(center=50.0, width=350.0),
    WindowPreset.BONE: Window(center=500.0, width=2000.0),
    WindowPreset.IQ_OTHNCCD: Window(center=0.0, width=260.0, floor=128.0 / 255.0),
}


def _path_from_env(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    path = Path(raw).expanduser() if raw else default
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def _int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


#: Inference runtimes for probabilities (``core/runtime.py``): auto picks OpenVINO when it agrees.
RUNTIMES = ("auto", "openvino", "tensorflow")


def _runtime_from_env() -> str:
    raw = (os.environ.get("LUNGREVIEW_RUNTIME") or "auto").strip().lower()
    if raw not in RUNTIMES:
        raise ValueError(f"LUNGREVIEW_RUNTIME must be one of {', '.join(RUNTIMES)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """All run-time settings (see the module docstring for variables and defaults)."""

    data_dir: Path
    db_url: str
    registry_dir: Path
    var_dir: Path
    max_upload_mb: int
    max_zip_mb: int
    max_pixels: int
    runtime: str = "auto"
    weights_dir: Path = REPO_ROOT.parent / "shared" / "weights"

    @property
    def iq_othnccd_dir(self) -> Path:
        """The IQ-OTH/NCCD class-folder copy under the data directory."""
        return self.data_dir / "iq-othnccd"

    @property
    def tcia_dir(self) -> Path:
        """The Lung-PET-CT-Dx sample study under the data directory."""
        return self.data_dir / "lung-pet-ct-dx"

    def study_key_secret(self) -> bytes:
        """Secret for the keyed hash of StudyInstanceUID (``LUNGREVIEW_STUDY_KEY`` or a file).

        Returns:
            bytes: the secret. Created once (32 random bytes, hex) in ``var_dir/study_key.secret``
            when the environment does not give one, so keys stay stable across restarts.
        """
        env = os.environ.get("LUNGREVIEW_STUDY_KEY")
        if env:
            return env.encode()
        path = self.var_dir / "study_key.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "x", encoding="ascii") as fh:
                    fh.write(secrets.token_hex(32))
            except FileExistsError:
                pass  # another process created it first
        return path.read_text(encoding="ascii").strip().encode()


def load_settings() -> Settings:
    """Read settings from the environment now (uncached; tests use this after monkeypatching).

    Raises:
        ValueError: a numeric variable is not a positive whole number, or ``LUNGREVIEW_RUNTIME``
            is not one of :data:`RUNTIMES`.
    """
    var_dir = _path_from_env("LUNGREVIEW_VAR_DIR", REPO_ROOT / "var")
    db_url = os.environ.get("LUNGREVIEW_DB_URL") or f"sqlite:///{var_dir / 'lungreview.db'}"
    return Settings(
        data_dir=_path_from_env("LUNGREVIEW_DATA_DIR", REPO_ROOT.parent / "shared" / "datasets"),
        db_url=db_url,
        registry_dir=_path_from_env("LUNGREVIEW_REGISTRY_DIR", REPO_ROOT / "models" / "registry"),
        var_dir=var_dir,
        max_upload_mb=_int_from_env("LUNGREVIEW_MAX_UPLOAD_MB", 500),
        max_zip_mb=_int_from_env("LUNGREVIEW_MAX_ZIP_MB", 2048),
        max_pixels=_int_from_env("LUNGREVIEW_MAX_PIXELS", 40_000_000),
        runtime=_runtime_from_env(),
        weights_dir=_path_from_env("LUNGREVIEW_WEIGHTS_DIR", REPO_ROOT.parent / "shared" / "weights"),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. See :func:`load_settings`."""
    return load_settings()
