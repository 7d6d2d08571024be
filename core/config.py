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
``LUNGREVIEW_DICOMWEB_URL``    unset: no PACS. The DICOMweb root of the PACS (QIDO/WADO/STOW
                               below it), e.g. ``https://pacs.example.org/dicom-web``
``LUNGREVIEW_DICOMWEB_USER``,  HTTP basic credentials for the PACS; read by the dashboard from
``LUNGREVIEW_DICOMWEB_         the environment or ``.streamlit/secrets.toml`` and passed to
PASSWORD``                     ``core.dicomweb.PacsClient``; never in ``Settings``, the database
                               or the logs
``LUNGREVIEW_DICOMWEB_         ``30`` seconds to connect and per answer part (PACS requests)
TIMEOUT_S``
``LUNGREVIEW_UID_ROOT``        ``1.2.826.0.1.3680043.8.498.`` (pydicom's root): UID prefix of the
                               series and instances LungReview exports (``core/export.py``)
``LUNGREVIEW_SESSION_IDLE_MIN``  ``30`` minutes without a request after which a sign-in ends
``LUNGREVIEW_SESSION_MAX_HOURS`` ``12`` hours after sign-in at which a sign-in ends regardless
``LUNGREVIEW_STORE_MAX_MB``    ``2048`` MiB the study store (``<var>/store``) may hold before it
                               evicts the least recently used series (``core/store.py``)
``LUNGREVIEW_SERIES_CACHE_MB`` ``768`` MiB of decoded series the server keeps in memory for all
                               browser sessions together (``core.store.MemoryCache``)
``LUNGREVIEW_WARM_MODEL``      ``1``: load and warm the default model in the background at the
                               first page view; ``0`` leaves it to the first analysis
``LUNGREVIEW_WEIGHTS_DIR``     ``<repo>/../shared/weights``: pretrained starting weights for
                               transfer learning (``models/transfer.py``)
``LUNGREVIEW_RAY_ADDRESS``     unset: archive runs (``services/archive.py``) start Ray embedded on
                               this machine; set (e.g. ``ray-head:6379`` or ``auto``), they join
                               that Ray cluster (``ray start --head`` / ``ray start --address=``;
                               docs/archive.md)
``LUNGREVIEW_ARCHIVE_WORKERS`` unset: one scoring worker per CPU Ray offers (embedded Ray is
                               started with ``min(2, CPUs)``); set: that many workers
``LUNGREVIEW_ARCHIVE_MAX_      ``3`` attempts per series and model before an archive run records
ATTEMPTS``                     a failure for good (transient failures only; docs/archive.md)
=============================  ==========================================================

Upload limits of ``core.imaging`` besides the three above: ``LUNGREVIEW_MAX_UPLOAD_PIXELS``, default
``200000000`` decoded pixels in one upload, all files together (about 760 slices of 512 x 512; a colour
pixel counts 3 times; checked from each file's header before decoding), and
``LUNGREVIEW_MAX_ZIP_MEMBERS``, default ``10000`` files in one ZIP.
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


#: pydicom's UID root (``pydicom.uid.PYDICOM_ROOT_UID``), used when ``LUNGREVIEW_UID_ROOT`` is unset.
#: A hospital should set its own registered root (PS3.5 9.1: UIDs are "<org root>.<suffix>").
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."


def _uid_root_from_env() -> str:
    raw = (os.environ.get("LUNGREVIEW_UID_ROOT") or DEFAULT_UID_ROOT).strip()
    if not raw.endswith("."):
        raw += "."
    # PS3.5 9.1: digits and dots, no leading zero in a component; leave room for a suffix (64 chars max)
    parts = raw[:-1].split(".")
    if len(raw) > 40 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
        raise ValueError(f"LUNGREVIEW_UID_ROOT must be a dotted-number UID root of at most 40 characters, got {raw!r}")
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
    # PACS (DICOMweb) and DICOM export; credentials are deliberately not settings (see module doc)
    dicomweb_url: str | None = None
    dicomweb_timeout_s: int = 30
    uid_root: str = DEFAULT_UID_ROOT
    session_idle_min: int = 30
    session_max_hours: int = 12
    store_max_mb: int = 2048
    series_cache_mb: int = 768
    warm_model: bool = True

    # upload limits of core.imaging beyond the three above (see the module docstring)
    max_upload_pixels: int = 200_000_000
    max_zip_members: int = 10_000

    weights_dir: Path = REPO_ROOT.parent / "shared" / "weights"

    # archive runs on Ray (services/archive.py): cluster address (None = embedded), workers, attempts
    ray_address: str | None = None
    archive_workers: int | None = None
    archive_max_attempts: int = 3

    @property
    def store_dir(self) -> Path:
        """The study store's folder (``core/store.py``): ``var_dir / "store"``."""
        return self.var_dir / "store"

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
        ValueError: a numeric variable is not a positive whole number, ``LUNGREVIEW_RUNTIME``
            is not one of :data:`RUNTIMES`, or ``LUNGREVIEW_UID_ROOT`` is not a UID root.
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
        dicomweb_url=(os.environ.get("LUNGREVIEW_DICOMWEB_URL") or "").strip() or None,
        dicomweb_timeout_s=_int_from_env("LUNGREVIEW_DICOMWEB_TIMEOUT_S", 30),
        uid_root=_uid_root_from_env(),
        session_idle_min=_int_from_env("LUNGREVIEW_SESSION_IDLE_MIN", 30),
        session_max_hours=_int_from_env("LUNGREVIEW_SESSION_MAX_HOURS", 12),
        store_max_mb=_int_from_env("LUNGREVIEW_STORE_MAX_MB", 2048),
        series_cache_mb=_int_from_env("LUNGREVIEW_SERIES_CACHE_MB", 768),
        warm_model=os.environ.get("LUNGREVIEW_WARM_MODEL", "1").strip() not in ("0", "false", "no"),
        max_upload_pixels=_int_from_env("LUNGREVIEW_MAX_UPLOAD_PIXELS", 200_000_000),
        max_zip_members=_int_from_env("LUNGREVIEW_MAX_ZIP_MEMBERS", 10_000),
        weights_dir=_path_from_env("LUNGREVIEW_WEIGHTS_DIR", REPO_ROOT.parent / "shared" / "weights"),
        ray_address=(os.environ.get("LUNGREVIEW_RAY_ADDRESS") or "").strip() or None,
        archive_workers=(_int_from_env("LUNGREVIEW_ARCHIVE_WORKERS", 1)
                         if (os.environ.get("LUNGREVIEW_ARCHIVE_WORKERS") or "").strip() else None),
        archive_max_attempts=_int_from_env("LUNGREVIEW_ARCHIVE_MAX_ATTEMPTS", 3),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. See :func:`load_settings`."""
    return load_settings()
