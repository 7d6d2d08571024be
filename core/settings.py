"""LungReview's run-time settings: one pydantic-settings class read from ``LUNGREVIEW_*`` variables.

Every default is written once, here (``docs/configuration.md`` lists them; a test checks that
table against this class). No default is an absolute path and none depends on the working
directory: relative paths, given or default, are resolved against the repository root (the
folder that holds ``core/``).

The PACS credentials (``LUNGREVIEW_DICOMWEB_USER`` / ``LUNGREVIEW_DICOMWEB_PASSWORD``) are
deliberately not settings: the dashboard reads them from the environment or
``.streamlit/secrets.toml`` and hands them to ``core.pacs.dicomweb.PacsClient`` only, so no settings
object, database row or log line holds them.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Environment variable prefix of every setting.
ENV_PREFIX = "LUNGREVIEW_"
#: Inference runtimes for probabilities (``core.inference.runtime``): auto picks OpenVINO when it agrees.
RUNTIMES = ("auto", "openvino", "tensorflow")
#: pydicom's UID root (``pydicom.uid.PYDICOM_ROOT_UID``), used when ``LUNGREVIEW_UID_ROOT`` is unset.
#: A hospital should set its own registered root (PS3.5 9.1: UIDs are "<org root>.<suffix>").
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."
_PATHS = ("data_dir", "registry_dir", "var_dir", "weights_dir")


class SettingsError(ValueError):
    """A ``LUNGREVIEW_*`` variable has a value LungReview cannot use; the message names it."""


class Settings(BaseSettings):
    """All run-time settings; field ``x`` is read from ``LUNGREVIEW_X`` (empty = default).

    Paths are absolute after loading (relative ones resolved against :data:`REPO_ROOT`).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="ignore")

    data_dir: Path = Field(Path("../shared/datasets"), description="datasets for training, evaluation and tests")
    db_url: str | None = Field(
        None, description="SQLite or PostgreSQL URL; unset: SQLite at <var_dir>/lungreview.db")
    registry_dir: Path = Field(Path("models/registry"), description="model registry the dashboard and CLIs read")
    var_dir: Path = Field(Path("var"), description="database, study-key secret, study store, OpenVINO cache")
    study_key: SecretStr | None = Field(
        None, description="secret of the keyed hash of StudyInstanceUID; unset: random, kept in <var_dir>")
    max_upload_mb: int = Field(500, gt=0, description="MB of one uploaded file")
    max_zip_mb: int = Field(2048, gt=0, description="MB a ZIP may expand to")
    max_pixels: int = Field(40_000_000, gt=0, description="pixels of one image (frame)")
    max_upload_pixels: int = Field(200_000_000, gt=0, description="decoded pixels of one upload, all files")
    max_zip_members: int = Field(10_000, gt=0, description="files in one ZIP")
    weights_dir: Path = Field(Path("../shared/weights"), description="pretrained starting weights")
    runtime: str = Field("auto", description="what computes probabilities: auto, openvino or tensorflow")
    dicomweb_url: str | None = Field(None, description="DICOMweb root of the PACS; unset: no PACS")
    dicomweb_timeout_s: int = Field(30, gt=0, description="seconds to connect and per answer part")
    uid_root: str = Field(DEFAULT_UID_ROOT, description="UID root of exported series and instances")
    session_idle_min: int = Field(30, gt=0, description="minutes without a click that end a sign-in")
    session_max_hours: int = Field(12, gt=0, description="hours after signing in that end a sign-in")
    store_max_mb: int = Field(2048, gt=0, description="MiB the study store may hold")
    series_cache_mb: int = Field(768, gt=0, description="MiB of decoded series kept in memory")
    warm_model: bool = Field(True, description="load and warm the default model at the first page view")
    ray_address: str | None = Field(
        None, description="Ray cluster that archive runs join (e.g. ray-head:6379 or auto); unset: Ray embedded")
    archive_workers: int | None = Field(None, gt=0, description="archive scoring workers; unset: one per CPU Ray offers")
    archive_max_attempts: int = Field(3, gt=0, description="attempts per series and model before an archive failure stands")

    @field_validator(*_PATHS, mode="after")
    @classmethod
    def _resolve(cls, value: Path) -> Path:
        path = value.expanduser()
        return (path if path.is_absolute() else REPO_ROOT / path).resolve()

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, value: Any) -> str:
        raw = str(value).strip().lower()
        if raw not in RUNTIMES:
            raise ValueError(f"LUNGREVIEW_RUNTIME must be one of {', '.join(RUNTIMES)}, got {value!r}")
        return raw

    @field_validator("dicomweb_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> str | None:
        return (str(value).strip() or None) if value is not None else None

    @field_validator("uid_root", mode="before")
    @classmethod
    def _uid_root(cls, value: Any) -> str:
        raw = str(value).strip()
        if not raw.endswith("."):
            raw += "."
        # PS3.5 9.1: digits and dots, no leading zero in a component; room for a suffix (64 chars max)
        parts = raw[:-1].split(".")
        if len(raw) > 40 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
            raise ValueError("LUNGREVIEW_UID_ROOT must be a dotted-number UID root of at most 40 characters, "
                             f"got {value!r}")
        return raw

    @field_validator("warm_model", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        return value if isinstance(value, bool) else str(value).strip().lower() not in ("0", "false", "no")

    @model_validator(mode="after")
    def _default_db_url(self) -> Settings:
        if not self.db_url:
            self.__dict__["db_url"] = f"sqlite:///{self.var_dir / 'lungreview.db'}"
        return self

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
        if self.study_key is not None:
            return self.study_key.get_secret_value().encode()
        path = self.var_dir / "study_key.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "x", encoding="ascii") as fh:
                    fh.write(secrets.token_hex(32))
            except FileExistsError:
                pass  # another process created it first
        return path.read_text(encoding="ascii").strip().encode()


def env_name(field: str) -> str:
    """The environment variable of a :class:`Settings` field (``max_upload_mb`` -> ``LUNGREVIEW_MAX_UPLOAD_MB``)."""
    return ENV_PREFIX + field.upper()


def load_settings() -> Settings:
    """Read settings from the environment now (uncached; tests use this after monkeypatching).

    Raises:
        SettingsError (a ValueError): a variable's value cannot be used (a number that is not a
            positive whole number, ``LUNGREVIEW_RUNTIME`` not one of :data:`RUNTIMES`,
            ``LUNGREVIEW_UID_ROOT`` not a UID root); the message names every such variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = env_name(str(err["loc"][0])) if err.get("loc") else ENV_PREFIX + "*"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(message if message.startswith(ENV_PREFIX) else
                            f"{name}: {message} (got {err.get('input')!r})")
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. See :func:`load_settings`."""
    return load_settings()
